"""The fused kernels' build: a lock that dies with its process, the cache key, failures, messages.

A stub compiler stands in for the C++ build (which takes a minute), so these tests exercise the
real lock, cache and error handling in seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch

import rangerlab
from rangerlab.fused import __main__ as prebuild
from rangerlab.fused import _build

#: A child process whose compile step is a stub: it hangs (as a killed build would) or writes a
#: fake library; loading the library is a no-op.
CHILD = textwrap.dedent(
    """
    import sys, time
    from rangerlab.fused import _build

    def compile_stub(directory):
        if (directory / "lock").exists():
            sys.exit("torch's stale lock file is still there: torch's builder would wait forever")
        if sys.argv[1] == "hang":
            (directory / "lock").write_text("")  # what torch's builder holds while it builds
            print("building", flush=True)
            time.sleep(600)
        (directory / "rangerlab_fused.so").write_text("")

    _build._compile = compile_stub
    _build._load_library = lambda path: None
    _build.load()
    print("loaded", flush=True)
    """
)


def child(mode: str, cache: Path) -> subprocess.Popen:
    env = {**os.environ, "RANGERLAB_CACHE": str(cache)}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, mode], env=env, stdout=subprocess.PIPE, text=True
    )


def test_a_build_killed_halfway_does_not_hang_later_processes(tmp_path, fresh_build, monkeypatch):
    hung = child("hang", tmp_path)
    try:
        assert hung.stdout.readline().strip() == "building"
        waiting = child("build", tmp_path)  # the lock is real: this one waits for the first
        time.sleep(1.0)
        assert waiting.poll() is None
        hung.send_signal(signal.SIGKILL)  # no cleanup runs: the lock must die with the process
        hung.wait(timeout=10)
        out, _ = waiting.communicate(timeout=60)
    finally:
        for process in (hung, locals().get("waiting")):
            if process is not None and process.poll() is None:
                process.kill()
    assert out.strip() == "loaded" and waiting.returncode == 0
    [directory] = tmp_path.iterdir()
    assert (directory / "complete").exists() and not (directory / "lock").exists()
    # A later process (this one) loads the finished build without building or waiting.
    monkeypatch.setenv("RANGERLAB_CACHE", str(tmp_path))
    _build.load()
    assert not fresh_build


@pytest.fixture
def fresh_build(monkeypatch, tmp_path):
    """A process that has not loaded the kernels, with its own cache and a stub compiler."""
    monkeypatch.setenv("RANGERLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(_build, "_ops", None)
    monkeypatch.setattr(_build, "_failure", None)
    monkeypatch.setattr(_build, "_announced", False)
    monkeypatch.setattr(_build, "build_seconds", 0.0)
    monkeypatch.setattr(rangerlab.fused, "_build_error", None)
    monkeypatch.setattr(_build, "_load_library", lambda path: None)
    calls = []

    def compile_stub(directory):
        calls.append(directory)
        (directory / "rangerlab_fused.so").write_text("")

    monkeypatch.setattr(_build, "_compile", compile_stub)
    return calls


def test_cache_key_names_the_cpu_and_the_python_environment(fresh_build, monkeypatch):
    first = _build.build_dir()
    monkeypatch.setattr(_build, "cpu_signature", lambda: "another CPU\nflags: fpu sse2")
    other_cpu = _build.build_dir()
    monkeypatch.undo()
    monkeypatch.setattr(sys, "prefix", "/elsewhere/.venv")
    other_env = _build.build_dir()
    assert len({first, other_cpu, other_env}) == 3


def test_compiling_is_announced_once_on_stderr(fresh_build, capsys):
    _build.load()
    _build.load()
    err = capsys.readouterr().err
    assert err.count("rangerlab: compiling") == 1 and "python -m rangerlab.fused" in err
    assert len(fresh_build) == 1


def test_a_failed_build_is_remembered_with_its_cause(fresh_build, monkeypatch):
    def broken(directory):
        fresh_build.append(directory)
        raise RuntimeError("g++: fatal error: no input files (the real cause)")

    monkeypatch.setattr(_build, "_compile", broken)
    params = [torch.nn.Parameter(torch.ones(3))]
    params[0].grad = torch.ones(3)
    opt = rangerlab.Adam(params, fused=True)
    for _ in range(3):
        with pytest.raises(RuntimeError, match="the real cause"):
            opt.step()
    assert len(fresh_build) == 1  # not retried on every step
    with pytest.warns(RuntimeWarning, match="the real cause") as record:
        rangerlab.Adam(params).step()  # fused=None: the reference path
    assert record[0].filename == __file__  # the warning points at the user's line
    assert not torch.equal(params[0].detach(), torch.ones(3))


def test_an_unwritable_cache_falls_back_or_names_rangerlab_cache(
    fresh_build, monkeypatch, tmp_path
):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("RANGERLAB_CACHE", str(blocker / "cache"))  # under a file: cannot exist
    params = [torch.nn.Parameter(torch.ones(3))]
    params[0].grad = torch.ones(3)
    with pytest.raises(RuntimeError, match="RANGERLAB_CACHE"):
        rangerlab.Adam(params, fused=True).step()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        rangerlab.Adam(params).step()
    assert any("RANGERLAB_CACHE" in str(w.message) for w in record)
    assert not fresh_build


def test_prebuild_command(fresh_build, capsys):
    assert prebuild.main([]) == 0
    assert "ready (built in" in capsys.readouterr().out
    assert prebuild.main([]) == 0
    assert "ready (built in" in capsys.readouterr().out  # same process: the same build
    assert len(fresh_build) == 1


def test_prebuild_command_reports_a_failure(fresh_build, monkeypatch, capsys):
    def broken(directory):
        raise RuntimeError("ninja: build stopped (the real cause)")

    monkeypatch.setattr(_build, "_compile", broken)
    assert prebuild.main([]) == 1
    assert "the real cause" in capsys.readouterr().err


def test_the_kernels_library_exports_the_operators_and_no_loop_helpers():
    """The row loops and their helpers have internal linkage in each file (kernels.h's unnamed
    namespace). Shared between the files as weak symbols, they were no longer inlined into their
    callers: a recorded Lookahead sync step of Ranger-LARS ran 4x slower, with every test green."""
    from rangerlab import fused

    if not fused.available():
        pytest.fail(f"the kernels did not build: {fused._build_error}")
    library = _build.build_dir() / f"{_build.NAME}.so"
    out = subprocess.run(
        ["nm", "-D", "--defined-only", "-C", str(library)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    exported = sorted(
        line.split(" ", 2)[2].split("(")[0]
        for line in out.splitlines()
        if "rangerlab_kernels::" in line
    )
    assert exported == [
        f"rangerlab_kernels::{name}"
        for name in sorted(
            [
                "adam_step",
                "adam_trust_apply",
                "adam_trust_norms",
                "advance_steps",
                "sgd_step",
                "sgd_trust_norms",
            ]
        )
    ]
