"""Build (once, cached) and load the C++ kernels (``kernels.h`` and the ``.cpp`` files beside it).

The build runs under a lock that dies with its process (``fcntl.flock`` on an open file), so a
build killed halfway (SIGKILL, SIGTERM from torchrun, Ctrl-C) never leaves later processes
waiting; torch's own lock file, which such a build leaves behind, is removed by the next builder.
A finished build is marked ``complete`` and later processes load it without torch's builder.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import torch

try:
    import fcntl
except ImportError:  # not POSIX: no lock (torch's own lock file still guards the build)
    fcntl = None

log = logging.getLogger("rangerlab.fused")

HERE = Path(__file__).parent
#: The kernels' translation units, compiled in parallel (ninja runs one per core), and the
#: headers they share.
SOURCES = tuple(HERE / name for name in ("adam_step.cpp", "adam_trust.cpp", "sgd.cpp"))
HEADERS = tuple(HERE / name for name in ("kernels.h", "adam.h"))
# No -ffast-math: results must match the reference path. -fno-math-errno and -fno-trapping-math
# only let loops vectorize; -fno-tree-loop-distribution keeps GCC from splitting the sum of the
# next GC row back out of the update loop that reads it ahead (kernels.h, for_gc_blocks): split,
# it was a pass of its own again. The other loops compile to the same code with it or without.
FLAGS = [
    "-O3",
    "-march=native",
    "-fopenmp",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fno-tree-loop-distribution",
]
NAME = "rangerlab_fused"
PREBUILD = "python -m rangerlab.fused"

#: Seconds the last `load` spent compiling (0.0 when the cached build was reused).
build_seconds = 0.0

_ops: object | None = None
_failure: Exception | None = None
_announced = False


class CacheError(RuntimeError):
    """The kernel cache directory cannot be created or written."""


def cpu_signature() -> str:
    """What ``-march=native`` compiles for: the CPU model and its instruction-set flags."""
    lines = []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor describes them all
                if line.split(":")[0].strip() in ("model name", "flags", "Features", "CPU part"):
                    lines.append(line.strip())
    except OSError:
        pass
    return "\n".join([platform.machine(), platform.processor(), *lines])


def build_dir() -> Path:
    """Where the compiled kernels are cached: ``$RANGERLAB_CACHE`` or ``~/.cache/rangerlab``.

    The directory name carries a hash of the source, the flags, the torch version, the CPU
    (``-march=native`` builds for this CPU's instructions: a home shared by machines of
    different CPUs must not load another's build) and the Python environment (two virtual
    environments must not rebuild the same directory back and forth).
    """
    root = Path(os.environ.get("RANGERLAB_CACHE", Path.home() / ".cache" / "rangerlab"))
    parts = [
        *(f"{path.name}\n".encode() + path.read_bytes() for path in (*SOURCES, *HEADERS)),
        " ".join(FLAGS).encode(),
        torch.__version__.encode(),
        cpu_signature().encode(),
        sys.prefix.encode(),
        sys.version.encode(),
    ]
    key = hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]
    return root / f"fused-{key}"


def load() -> object:
    """Build the kernels on first use (28-34 s measured on 2 cores), load them, return the ops.

    Later calls, and later processes, reuse the cached library. A failed build is remembered:
    later calls raise again with its cause instead of retrying.

    Raises:
        CacheError: the cache directory cannot be written (set ``RANGERLAB_CACHE``).
        Exception: whatever the build raises (no compiler, no ninja); callers decide whether
            to fall back.
    """
    global _ops, _failure
    if _ops is not None:
        return _ops
    if _failure is not None:
        raise RuntimeError(
            f"the fused kernels failed to build earlier in this process: {_failure}"
        ) from _failure
    try:
        _ops = _load()
    except Exception as error:
        _failure = error
        raise
    return _ops


def loaded() -> object | None:
    """The ops if this process has loaded the kernels already, else None (never builds)."""
    return _ops


def _load() -> object:
    global build_seconds
    directory = build_dir()
    done = directory / "complete"
    if not done.exists():
        try:
            directory.mkdir(parents=True, exist_ok=True)
            lock = open(directory / "build.lock", "a")  # noqa: SIM115 (closed below)
        except OSError as error:
            raise CacheError(
                f"cannot write the fused-kernel cache {directory} ({error}); set "
                "RANGERLAB_CACHE to a writable directory"
            ) from error
        with lock, _locked(lock):
            if not done.exists():  # another process may have built it while we waited
                start = time.perf_counter()
                _announce(directory)
                # torch's builder guards the directory with a lock file of its own, which a
                # killed build leaves behind (and every later build then waits for forever).
                # Holding our lock, we are the only builder: any such file is stale.
                (directory / "lock").unlink(missing_ok=True)
                _compile(directory)
                done.write_text(f"built in {time.perf_counter() - start:.1f} s\n")
                build_seconds = time.perf_counter() - start
    _load_library(directory / f"{NAME}.so")
    return torch.ops.rangerlab_fused


@contextmanager
def _locked(file: IO) -> Iterator[None]:
    """An exclusive lock on ``file`` for the block; the OS drops it if the process dies."""
    if fcntl is None:
        yield
        return
    fcntl.flock(file.fileno(), fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(file.fileno(), fcntl.LOCK_UN)


def _announce(directory: Path) -> None:
    """Say once, in plain words on stderr, why the first fused step takes a minute."""
    global _announced
    log.info("compiling the fused kernels into %s", directory)
    if _announced:
        return
    _announced = True
    print(
        "rangerlab: compiling the fast CPU kernels for this machine (once; under a minute). "
        f"Later runs reuse them from {directory}. To build them ahead of time (container "
        f"images, before torchrun starts its processes), run: {PREBUILD}",
        file=sys.stderr,
        flush=True,
    )


def _compile(directory: Path) -> None:
    """Compile the kernels into ``directory`` with torch's extension builder (ninja: the
    translation units in parallel)."""
    from torch.utils import cpp_extension

    with _ninja_on_path():
        cpp_extension.load(
            name=NAME,
            sources=[str(path) for path in SOURCES],
            extra_cflags=FLAGS,
            extra_ldflags=["-fopenmp"],
            build_directory=str(directory),
            is_python_module=False,
            verbose=False,
        )


def _load_library(path: Path) -> None:
    torch.ops.load_library(str(path))


@contextmanager
def _ninja_on_path() -> Iterator[None]:
    """Put the pip package's ``ninja`` on PATH for the duration of the build, if none is there.

    torch's builder looks for ``ninja`` on PATH, which lacks the virtual environment's binaries
    when the environment is used without being activated.
    """
    saved = os.environ.get("PATH", "")
    if shutil.which("ninja") is None:
        try:
            import ninja
        except ImportError:
            pass
        else:
            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + saved
    try:
        yield
    finally:
        os.environ["PATH"] = saved
