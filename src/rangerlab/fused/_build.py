"""Build (once, cached) and load the C++ kernels in ``kernels.cpp``."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

log = logging.getLogger("rangerlab.fused")

SOURCE = Path(__file__).with_name("kernels.cpp")
# No -ffast-math: results must match the reference path; these two only let loops vectorize.
FLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]

#: Seconds the last :func:`load` spent compiling (0.0 when the cached build was reused).
build_seconds = 0.0


def build_dir() -> Path:
    """Where the compiled kernels are cached: ``$RANGERLAB_CACHE`` or ``~/.cache/rangerlab``.

    The directory name carries a hash of the source, the flags and the torch version, so an
    edited source or a new torch gets a fresh build instead of a stale library.
    """
    root = Path(os.environ.get("RANGERLAB_CACHE", Path.home() / ".cache" / "rangerlab"))
    key = hashlib.sha256(
        SOURCE.read_bytes() + " ".join(FLAGS).encode() + torch.__version__.encode()
    ).hexdigest()[:16]
    return root / f"fused-{key}"


@functools.cache
def load() -> object:
    """Compile ``kernels.cpp`` on first use (about a minute on 2 cores), load it, return the ops.

    Later calls, and later processes, reuse the cached library. Raises whatever the build
    raises (no compiler, no ninja): callers decide whether to fall back.
    """
    global build_seconds
    from torch.utils import cpp_extension

    directory = build_dir()
    directory.mkdir(parents=True, exist_ok=True)
    library = directory / "rangerlab_fused.so"
    start = time.perf_counter()
    if not library.exists():
        log.warning("rangerlab: compiling the fused kernels once into %s", directory)
    with _ninja_on_path():
        cpp_extension.load(
            name="rangerlab_fused",
            sources=[str(SOURCE)],
            extra_cflags=FLAGS,
            extra_ldflags=["-fopenmp"],
            build_directory=str(directory),
            is_python_module=False,
            verbose=False,
        )
    build_seconds = time.perf_counter() - start
    return torch.ops.rangerlab_fused


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
