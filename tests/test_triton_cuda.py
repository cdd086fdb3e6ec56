"""The fused CUDA step on a real GPU: the compiled Triton kernels, no host synchronisation, one
launch per pass, and the README's mixed-precision loop. Skipped without CUDA; the same kernels
are checked on every machine under triton's interpreter (``test_triton.py``).

``test_triton.py`` sets ``TRITON_INTERPRET=1`` only where there is no GPU, so on a GPU machine
both files share a session and these run compiled; with the variable set by hand these skip.
"""

from __future__ import annotations

import os

import pytest
import torch

import rangerlab
from rangerlab import fused
from test_fused import CASES, SHAPES, _rel

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.skipif(
        os.environ.get("TRITON_INTERPRET") == "1", reason="compiled kernels, not the interpreter"
    ),
]

STEPS = 9


def cuda_trajectory(case, dtype, steps=STEPS, **path):
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen).to("cuda", dtype)) for s in SHAPES]
    groups = [{"params": params[:4]}, {"params": params[4:], **case.second}]
    opt = case.ours(groups, **path)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for i, p in enumerate(params):
            g = torch.randn(p.shape, generator=gen)
            p.grad = None if i == 3 else g.to("cuda", dtype)
        opt.step()
    return params, opt


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cuda_kernels_equal_reference(case, dtype):
    fast, opt = cuda_trajectory(case, dtype, fused=True)
    assert all(s["step"].is_cuda for s in opt.state.values())
    ref, _ = cuda_trajectory(case, dtype, foreach=False)
    for a, b in zip(fast, ref, strict=True):
        if dtype == torch.float32:
            assert _rel(a, b) <= 1e-5
        else:
            torch.testing.assert_close(a, b, rtol=8e-3, atol=1e-5)


def test_default_path_on_cuda_is_triton():
    params = [torch.nn.Parameter(torch.randn(4, 3, device="cuda"))]
    opt = rangerlab.Ranger(params)
    group = opt.param_groups[0]
    step = fused.select(group, opt.chain_for(group), params)
    assert step is not None and step.device_steps


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2)
    ).cuda()


@pytest.mark.parametrize("name", ["Ranger", "RangerLARS", "LARS", "AdamW"])
def test_gradscaler_step_without_host_sync(name):
    """After a first step (state and tables made), a GradScaler step never synchronises."""
    model = _model()
    cls = rangerlab.Adam if name == "AdamW" else getattr(rangerlab, name)
    kwargs = dict(decoupled_weight_decay=True, weight_decay=1e-2) if name == "AdamW" else {}
    opt = cls(model.parameters(), lr=1e-3, **kwargs)
    scaler = torch.amp.GradScaler("cuda")
    x, y = torch.randn(32, 20, device="cuda"), torch.randint(0, 2, (32,), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.float16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)

    step()
    scaler.update()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_found_inf_on_cuda_changes_nothing():
    model = _model()
    opt = rangerlab.Ranger(model.parameters(), lr=1e-2, k=1)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    before = [p.detach().clone() for p in model.parameters()]
    slow = [opt.state[p]["slow_param"].clone() for p in model.parameters()]
    opt.grad_scale, opt.found_inf = torch.ones((), device="cuda"), torch.ones(1, device="cuda")
    opt.step()
    del opt.grad_scale, opt.found_inf
    params = list(model.parameters())
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True))
    assert all(torch.equal(opt.state[p]["slow_param"], s) for p, s in zip(params, slow))
    assert all(int(opt.state[p]["step"]) == 1 for p in params)
    assert int(opt.param_groups[0]["lookahead_step"]) == 1


def test_few_launches_for_2000_tensors():
    """One launch per pass for a whole bucket: the launch count does not grow with tensors."""
    params = [torch.nn.Parameter(torch.randn(64, 64, device="cuda")) for _ in range(2000)]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = rangerlab.Ranger(params, k=2)
    opt.step()
    opt.step()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        opt.step()
        torch.cuda.synchronize()
    launches = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    assert len(launches) < 60, [e.name for e in launches]


def test_compiled_model_and_readme_loop():
    """torch.compile(model) trains with the fused step; the README's fp16 GradScaler loop runs."""
    model = _model()
    compiled = torch.compile(model)
    opt = rangerlab.Ranger(model.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=20)
    scaler = torch.amp.GradScaler("cuda")
    first = None
    x = torch.randn(64, 20, device="cuda")
    y = (x[:, 0] > 0).long()
    for _ in range(20):
        with torch.autocast("cuda", dtype=torch.float16):
            loss = torch.nn.functional.cross_entropy(compiled(x), y)
        first = float(loss) if first is None else first
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
    assert float(loss) < first
    with opt.slow_weights():
        assert torch.isfinite(model(x)).all()
