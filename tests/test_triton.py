"""The Triton kernels of the CUDA step, run on CPU tensors by triton's interpreter.

``TRITON_INTERPRET=1`` runs every program one after another in numpy, so these tests prove the
kernels' arithmetic, tables and masks on a machine without a GPU (shapes are tiny: the
interpreter is slow). triton reads the variable when it is first imported and then for the whole
process, so it is set here only where there is no GPU; on a GPU machine these skip (unless the
variable is set for the run) and ``test_triton_cuda.py`` checks the compiled kernels instead.
The private switch ``RANGERLAB_TRITON_ON_CPU=1`` routes CPU buckets to the Triton path. Each test
compares with the reference path on the same case table as the C++ kernels' tests, with chunks
small enough that tensors span several programs.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

import rangerlab  # noqa: E402
from rangerlab import fused  # noqa: E402
from rangerlab.fused import triton_plan  # noqa: E402
from rangerlab.transforms.lookahead import COUNTER  # noqa: E402
from test_fused import (  # noqa: E402
    CASES,
    _rel,
    assert_same,
    case_named,
    make_params,
    resume,
    trajectory,
)

pytestmark = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1",
    reason="a GPU is present: test_triton_cuda.py checks the compiled kernels "
    "(TRITON_INTERPRET=1 runs these instead)",
)

STEPS = 7  # RAdam turns adaptive at step 6; Lookahead syncs at k = 2, 3, 4 and 6 within it

RANGER = case_named("ranger-wd-k5")  # syncs at step 5; its second group has its own alpha
RANGER_LARS = case_named("ranger-lars-capped-k4")  # a resume at step 3 lands mid-cycle
SGD = case_named("sgd-nesterov-wd")  # momentum buffers, made at the first step
LARS = case_named("lars-dampening-gc")  # its second group has no trust ratio


@pytest.fixture(autouse=True)
def triton_on_cpu(monkeypatch):
    """CPU buckets take the Triton path; a program covers at most 512 elements (whole rows)."""
    monkeypatch.setenv("RANGERLAB_TRITON_ON_CPU", "1")
    monkeypatch.setattr(triton_plan, "CHUNK", 512)


def reference(case, dtype, monkeypatch, steps=STEPS, **kwargs):
    with monkeypatch.context() as m:
        m.setenv("RANGERLAB_TRITON_ON_CPU", "0")
        return trajectory(case, dtype, steps=steps, foreach=False, **kwargs)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_triton_equals_reference(case, monkeypatch):
    fast = trajectory(case, torch.float32, steps=STEPS, fused=True)
    assert all(isinstance(s["step"], torch.Tensor) for s in fast[1].state.values())
    assert_same(*fast, *reference(case, torch.float32, monkeypatch), rtol=2e-6)


@pytest.mark.parametrize(
    "case, dtype, master_weights",
    [
        (RANGER, torch.bfloat16, False),
        (RANGER, torch.bfloat16, True),
        (LARS, torch.bfloat16, False),
        (LARS, torch.bfloat16, True),
        (RANGER_LARS, torch.float16, False),
    ],
    ids=["Ranger-bf16", "Ranger-bf16-master", "LARS-bf16", "LARS-bf16-master", "RangerLARS-fp16"],
)
def test_low_precision_params(case, dtype, master_weights, monkeypatch):
    fast = trajectory(case, dtype, steps=STEPS, fused=True, master_weights=master_weights)
    ref = reference(case, dtype, monkeypatch, master_weights=master_weights)
    for pf, pr in zip(fast[0], ref[0], strict=True):
        assert pf.dtype == dtype
        # Both round a float32 result once per step, to nearest-even.
        torch.testing.assert_close(pf, pr, rtol=8e-3, atol=1e-5)
    states = [s for s in fast[1].state.values() if len(s) > 1]
    assert states and all(
        v.dtype == torch.float32 for s in states for k, v in s.items() if k != "step"
    )
    if master_weights:
        masters = [s["master_param"] for s in states]
        ref_masters = [s["master_param"] for s in ref[1].state.values() if len(s) > 1]
        assert all(_rel(a, b) <= 2e-6 for a, b in zip(masters, ref_masters, strict=True))


def _amp_step(opt, params, grads, scale: float, found_inf: float) -> None:
    """A step as GradScaler runs it for an optimizer with _step_supports_amp_scaling."""
    for p, g in zip(params, grads, strict=True):
        p.grad = None if g is None else g * scale
    opt.grad_scale = torch.full((), scale)
    opt.found_inf = torch.full((1,), found_inf)
    try:
        opt.step()
    finally:
        del opt.grad_scale, opt.found_inf


@pytest.mark.parametrize("case", [RANGER_LARS, SGD, LARS], ids=str)
def test_grad_scale_and_found_inf(case, monkeypatch):
    """Scaled gradients are unscaled in the kernel; a step with found_inf changes nothing."""
    params = make_params(torch.float32)
    opt = case.ours([{"params": params[:4]}, {"params": params[4:], **case.second}], fused=True)
    gen = torch.Generator().manual_seed(1)
    for step in range(STEPS):
        grads = [
            None if i == 3 else torch.randn(p.shape, generator=gen) for i, p in enumerate(params)
        ]
        if step in (0, 3):  # a skipped first step (momentum buffers not made) and a later one
            before = copy.deepcopy((params, opt.state_dict()))
            _amp_step(opt, params, [None if g is None else g * float("inf") for g in grads],
                      scale=8.0, found_inf=1.0)  # fmt: skip
            assert all(torch.equal(p, b) for p, b in zip(params, before[0], strict=True))
            after = opt.state_dict()
            assert after["param_groups"] == before[1]["param_groups"]
            for key, entry in before[1]["state"].items():
                assert all(torch.equal(v, after["state"][key][n]) for n, v in entry.items())
            # Only the device can tell a skipped first step, so state may appear: as it starts.
            for key in after["state"].keys() - before[1]["state"].keys():
                new, p = after["state"][key], params[key]
                assert new["step"] == 0 and "momentum_buffer" not in new
                assert all(
                    torch.equal(new[n], torch.zeros_like(p))
                    for n in ("exp_avg", "exp_avg_sq")
                    if n in new
                )
                assert torch.equal(new.get("slow_param", p), p)
        _amp_step(opt, params, grads, scale=2.0**step, found_inf=0.0)
    ref = reference(case, torch.float32, monkeypatch)
    assert_same(params, opt, *ref, rtol=2e-6)


def test_skip_nonfinite_on_the_device():
    """skip_nonfinite on the Triton path: the check and the skip happen on the device."""
    params = make_params(torch.float32)
    opt = rangerlab.Ranger(params, k=1, skip_nonfinite=True, fused=True)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    before = copy.deepcopy((params, opt.state_dict()))
    params[4].grad[0, 0, 0, 0] = float("nan")
    opt.step()
    assert not opt.last_step_skipped  # only the device knows; nothing was read back
    assert all(torch.equal(p, b) for p, b in zip(params, before[0], strict=True))
    after = opt.state_dict()
    assert after["param_groups"] == before[1]["param_groups"]
    for key, entry in before[1]["state"].items():
        assert all(torch.equal(v, after["state"][key][n]) for n, v in entry.items())
    params[4].grad[0, 0, 0, 0] = 1.0
    opt.step()
    assert not torch.equal(params[0], before[0][0])


def test_lookahead_counter_on_the_device(monkeypatch):
    """After a GPU step under GradScaler the Lookahead counter is a tensor: the sync decision and
    a skipped step's take-back then both happen on the tensor (on the CPU here)."""
    case = RANGER
    params = make_params(torch.float32)
    opt = case.ours([{"params": params[:4]}, {"params": params[4:], **case.second}], fused=True)
    for group in opt.param_groups:
        group[COUNTER] = torch.tensor(0)
    gen = torch.Generator().manual_seed(1)
    for step in range(STEPS):
        grads = [
            None if i == 3 else torch.randn(p.shape, generator=gen) for i, p in enumerate(params)
        ]
        if step == 2:  # skipping the step before a sync must move the sync too
            _amp_step(opt, params, grads, scale=1.0, found_inf=1.0)
        _amp_step(opt, params, grads, scale=1.0, found_inf=0.0)
    counter = opt.param_groups[0][COUNTER]
    assert isinstance(counter, torch.Tensor) and int(counter) == STEPS
    ref = reference(case, torch.float32, monkeypatch)
    assert all(_rel(a, b) <= 2e-6 for a, b in zip(params, ref[0], strict=True))


def test_state_dict_moves_between_paths(monkeypatch):
    """A checkpoint from the Triton path resumes on the C++ and reference paths, and back."""
    case = RANGER_LARS
    full = reference(case, torch.float32, monkeypatch, steps=8)
    on_triton = dict(fused=True)
    for first, then, triton_first in (
        (on_triton, dict(foreach=False), True),
        (dict(fused=True), on_triton, False),
    ):
        monkeypatch.setenv("RANGERLAB_TRITON_ON_CPU", "1" if triton_first else "0")
        params, opt = trajectory(case, torch.float32, steps=3, **first)
        saved = copy.deepcopy(opt.state_dict())
        monkeypatch.setenv("RANGERLAB_TRITON_ON_CPU", "0" if triton_first else "1")
        resumed = resume(case, params, saved, start=3, steps=8, **then)
        assert_same(params, resumed, *full, rtol=2e-6)


def test_path_selection_and_refusals():
    params = make_params(torch.float32)
    ranger = rangerlab.Ranger(params)
    group = ranger.param_groups[0]
    step = fused.select(group, ranger.chain_for(group), params)
    assert isinstance(step, triton_plan.TritonStep) and step.device_steps and step.radam
    assert fused.select({**group, "foreach": True}, ranger.chain_for(group), params) is None
    doubles = make_params(torch.float64)
    assert fused.select(group, ranger.chain_for(group), doubles) is None
    for p in doubles:
        p.grad = torch.ones_like(p)
    with pytest.raises(ValueError, match="dtype torch.float64"):
        rangerlab.Ranger(doubles, fused=True).step()


@pytest.mark.parametrize("radam", [False, True], ids=["adam", "radam"])
def test_scalar_table_equals_the_rule(radam):
    """The per-step scalars the kernels read are the transforms' rule at every step, also past
    the table's end (where the values have settled to their float32 limits)."""
    kernel = fused.FusedKernel("adam", radam=radam)
    table = triton_plan.scalar_table(kernel, 0.9, 0.99, torch.device("cpu"))
    end = len(table)
    assert 1000 < end < triton_plan.TABLE_CAP
    for t in (1, 2, 5, 6, 7, 100, end - 1, end, end + 1, 10 * end):
        a, d, adaptive = kernel.scalars(t, 0.9, 0.99)
        row = table[min(t, end) - 1].tolist()
        assert row == [
            torch.tensor(a, dtype=torch.float32).item(),
            torch.tensor(d, dtype=torch.float32).item(),
            float(adaptive),
        ], t
    assert triton_plan.scalar_table(kernel, 0.9, 0.9999999, torch.device("cpu")) is None


def test_one_program_per_task_and_int64_offsets():
    """The task table covers every element once, in whole rows for GC, with int64 entries."""
    shapes = ((40, 50), (7,), (1,), (3, 1))
    info, tasks, bounds, count = triton_plan._layout(
        shapes, (True, False, False, True), (False,) * 4, 96, torch.device("cpu")
    )
    assert info.dtype == tasks.dtype == bounds.dtype == torch.int64
    rows = info[:, 1]
    assert rows.tolist() == [50, triton_plan.COLS, triton_plan.COLS, 1]
    covered = [0] * len(shapes)
    for i, first, n in tasks.tolist():
        assert first == covered[i] // rows[i]
        covered[i] += n * int(rows[i])
    assert covered[0] == 2000 and covered[1] >= 7 and count == bounds[-1] == len(tasks)
