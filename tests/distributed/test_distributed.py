"""DDP, FSDP2, ZeroRedundancyOptimizer and distributed checkpoints give one process's result.

Each fixture starts real processes (gloo on 127.0.0.1, CPU) running ``_worker.py`` once per
module and checks many things per start, because process start-up dominates. A hang fails the
test after ``TIMEOUT_S`` instead of blocking the suite.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import rangerlab

if not (dist.is_available() and dist.is_gloo_available()):
    pytest.skip("this torch build has no torch.distributed gloo backend", allow_module_level=True)

WORKER_PATH = Path(__file__).with_name("_worker.py")
_spec = importlib.util.spec_from_file_location("rangerlab_distributed_worker", WORKER_PATH)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)

TIMEOUT_S = 240
#: float32 tolerance: the runs differ only in how the batch mean is summed across processes.
TOL = {"rtol": 1e-5, "atol": 1e-6}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(scenario: str, world: int, out: Path) -> dict:
    """Run ``scenario`` on ``world`` processes and return rank 0's results."""
    port = str(free_port())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    logs = [out / f"{scenario}.rank{rank}.log" for rank in range(world)]
    procs = []
    for rank, log in enumerate(logs):
        with open(log, "w") as f:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(WORKER_PATH),
                        scenario,
                        str(rank),
                        str(world),
                        port,
                        str(out),
                    ],
                    stdout=f,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for proc in procs:
            proc.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    failed = [(r, p.returncode) for r, p in enumerate(procs) if p.returncode != 0]
    if failed:
        tails = "\n".join(
            f"--- rank {r} (exit {code}) ---\n{logs[r].read_text()[-3000:]}" for r, code in failed
        )
        pytest.fail(f"{scenario} on {world} processes failed or hung ({TIMEOUT_S} s):\n{tails}")
    return torch.load(out / f"{scenario}.pt", weights_only=True)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("distributed")


@pytest.fixture(scope="module")
def two(workdir: Path) -> dict:
    """2 processes: DDP, FSDP2 and ZeRO for every optimizer, checkpoints, the non-finite guard."""
    return launch("two", 2, workdir)


@pytest.fixture(scope="module")
def three(two: dict, workdir: Path) -> dict:
    """3 processes (uneven shards): the 2-process checkpoints loaded and trained on."""
    return launch("three", 3, workdir)


def assert_params_close(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(
            actual[name], expected[name], **TOL, msg=lambda m, name=name: f"{name}: {m}"
        )


def assert_params_moved(after: dict, before: dict) -> None:
    """Guards the comparisons: the optimizers really changed every parameter."""
    for name in before:
        assert not torch.equal(after[name], before[name]), name


NAMES = list(worker.OPTIMIZERS)


@functools.cache
def reference(name: str) -> dict:
    """The single-process parameters for ``name`` (computed here, with no process group)."""
    return worker.reference(name)[0]


@functools.cache
def reference_slow(name: str) -> dict:
    """The single-process parameters as ``slow_weights()`` shows them."""
    return worker.reference(name)[1]


@pytest.mark.parametrize("name", NAMES)
def test_ddp_equals_one_process(two: dict, name: str) -> None:
    assert_params_close(two[name]["ddp"], reference(name))


@pytest.mark.parametrize("name", NAMES)
def test_fsdp2_equals_one_process(two: dict, name: str) -> None:
    result = two[name]
    assert_params_close(result["fsdp"], reference(name))
    assert_params_close(result["fsdp_slow"], reference_slow(name))
    initial = dict(worker.build_model().named_parameters())
    assert_params_moved(result["fsdp"], {k: v.detach() for k, v in initial.items()})


@pytest.mark.parametrize("name", NAMES)
def test_fsdp2_takes_the_fused_path_on_shard0(two: dict, name: str) -> None:
    """Every rangerlab preset runs its fused kernels on the local shards (explicit foreach
    keeps the reference path, as on one process, and so does fused=False); foreign optimizers
    are not Chains."""
    reference = {"LARS foreach=True", "Ranger fused=False"}
    expected = "NoneType" if name in reference else "ShardedStep"
    if name.startswith("Lookahead("):
        expected = "not a Chain"
    assert two[name]["fsdp_path"] == expected


@pytest.mark.parametrize("name", NAMES)
def test_fsdp2_state_stays_sharded(two: dict, name: str) -> None:
    assert two[name]["fsdp_state_kinds"] == ["DTensor"]


def test_lookahead_slow_weights_differ_from_fast_under_fsdp2(two: dict) -> None:
    """Step 8 is mid-cycle for k=3, so the slow-weight comparison above is not a tautology."""
    for name in ("Ranger", "RangerLARS", "Lookahead(torch AdamW)"):
        assert_params_moved(two[name]["fsdp_slow"], two[name]["fsdp"])


@pytest.mark.parametrize("name", worker.CHECKPOINTED)
def test_checkpoint_resume_is_exact(two: dict, name: str) -> None:
    result = two["checkpoint"][name]
    for key, value in result["uninterrupted"].items():
        assert torch.equal(result["resumed"][key], value), key


@pytest.mark.parametrize("name", worker.CHECKPOINTED)
def test_checkpoint_loads_into_three_processes(three: dict, name: str) -> None:
    assert_params_close(three[name]["resumed"], reference(name))


@pytest.mark.parametrize("name", worker.CHECKPOINTED)
def test_full_state_dict_loads_into_three_processes(three: dict, name: str) -> None:
    assert_params_close(three[f"{name}, full state dict"]["resumed"], reference(name))


@pytest.mark.parametrize("name", worker.CHECKPOINTED)
@pytest.mark.parametrize("source", ["2 processes", "1 process"])
def test_plain_state_dict_of_another_sharding_fails_clearly(
    three: dict, name: str, source: str
) -> None:
    result = three["misfits"][f"{name} from {source}"]
    assert result["error"] is not None, "loaded state sharded for another world size"
    assert "sharded as (Shard(dim=0),) over ranks [0, 1, 2]" in result["error"]
    assert "torch.distributed.checkpoint" in result["error"]
    assert result["unchanged"]


@pytest.mark.parametrize("key", list(worker.RESHARDED))
def test_trust_ratio_and_gc_on_three_uneven_or_dim1_shards(three: dict, key: str) -> None:
    name, _ = worker.RESHARDED[key]
    assert_params_close(three[key]["fsdp"], reference(name))


@functools.cache
def telemetry_reference(name: str) -> list[dict]:
    """One process's telemetry reads after each step (the fused path)."""
    return worker.telemetry_reads(name, worker.build_model())["reads"]


def assert_reads_close(reads: list[dict], expected: list[dict]) -> None:
    assert len(reads) == len(expected) == worker.STEPS
    for step, (got, want) in enumerate(zip(reads, expected, strict=True), start=1):
        assert got.keys() == want.keys(), (step, sorted(got.keys() ^ want.keys()))
        for key, value in want.items():
            # float32 sums taken in another order (per shard, then over ranks)
            assert got[key] == pytest.approx(value, rel=2e-5, abs=1e-9), (step, key)


@pytest.mark.parametrize("name", worker.TELEMETRY)
def test_fsdp2_telemetry_is_recorded_by_the_fused_step_and_equals_one_process(
    two: dict, name: str
) -> None:
    """The shards' sums, combined over the ranks, give the whole tensors' quantities: the
    norms, trust ratios, GC's removed mean, the adaptive factor's mean and variation."""
    result = two["telemetry"][name]
    assert result["probed"] == 0  # no recorded step went to the reference path
    assert_reads_close(result["reads"], telemetry_reference(name))
    keys = {key.split("/")[0] for read in result["reads"] for key in read}
    assert "update_ratio" in keys
    assert ("trust_ratio" in keys) == (name in ("LARS", "LARC", "RangerLARS"))
    assert ("adaptive_lr_cv" in keys) == (name in ("AdamW", "RAdam", "Ranger", "RangerLARS"))
    assert ("lookahead_distance" in keys) == (name in ("Ranger", "RangerLARS"))


@pytest.mark.parametrize("name", worker.TELEMETRY_REFERENCE_PATH)
def test_fsdp2_telemetry_on_the_reference_path_reads_plain_numbers(two: dict, name: str) -> None:
    """The reference path records the probes' norms of DTensors: read, they are the whole
    tensors' values (as one process's reads), not DTensors that `tolist` refuses."""
    result = two["telemetry_reference_path"][name]
    assert result["probed"] > 0  # the probes recorded
    assert_reads_close(result["reads"], telemetry_reference(name))


@pytest.mark.parametrize("name", worker.TELEMETRY_INTERVAL)
def test_fsdp2_telemetry_read_once_on_rank_0_is_the_mean_of_one_process_steps(
    two: dict, name: str
) -> None:
    """One read after all the steps, on rank 0 alone: each value is the mean, over the steps
    that recorded it, of one process's per-step values (the ranks' sums were gathered while the
    steps went on, and combined at the read)."""
    got = dict(two["telemetry_interval"][name])
    assert got.pop("steps") == got.pop("recorded_steps") == worker.STEPS
    per_step: dict[str, list[float]] = {}
    for read in telemetry_reference(name):
        for key, value in read.items():
            if key not in ("steps", "recorded_steps"):
                per_step.setdefault(key, []).append(value)
    assert got.keys() == per_step.keys()
    for key, values in per_step.items():
        assert got[key] == pytest.approx(sum(values) / len(values), rel=2e-5, abs=1e-9), key


@pytest.mark.parametrize("name", ["LARS", "RangerLARS", "Ranger"])
def test_fsdp2_telemetry_on_three_uneven_shards_equals_one_process(three: dict, name: str) -> None:
    result = three["telemetry"][name]
    assert result["probed"] == 0
    assert_reads_close(result["reads"], telemetry_reference(name))


def test_nonfinite_gradient_on_one_rank_skips_the_step_on_all(two: dict) -> None:
    result = two["skip_nonfinite"]
    assert result["skipped_per_rank"] == [1, 1]
    for key, value in result["before"].items():
        assert torch.equal(result["after"][key], value), key
    assert result["steps"] == [3.0]
    assert result["lookahead_step"] == 3


@pytest.mark.parametrize("name", worker.ZERO_CLASSES)
def test_zero_redundancy_equals_one_process(two: dict, name: str) -> None:
    assert_params_close(two["zero"][f"ZeRO({name})"]["zero"], reference(name))


@pytest.mark.parametrize("key", list(worker.ZERO_RESUMED))
def test_zero_consolidated_state_resumes_exactly(two: dict, key: str) -> None:
    result = two["zero"][key]
    assert_params_close(result["zero"], reference(worker.ZERO_RESUMED[key][1]))
    for name, value in result["zero"].items():
        assert torch.equal(result["resumed"][name], value), name


@pytest.mark.parametrize("key", list(worker.ZERO_RESUMED))
def test_zero_consolidated_state_loads_into_three_processes(three: dict, key: str) -> None:
    assert_params_close(three[key]["resumed"], reference(worker.ZERO_RESUMED[key][1]))


def test_consolidate_state_dict_needs_a_sharded_optimizer() -> None:
    opt = rangerlab.Lookahead(torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1))
    with pytest.raises(TypeError, match="ZeroRedundancyOptimizer"):
        opt.consolidate_state_dict()
