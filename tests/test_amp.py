"""Mixed precision: master weights, the non-finite guard, autocast, GradScaler helpers."""

from __future__ import annotations

import warnings

import pytest
import torch

import rangerlab
from optim_table import CASES, make_params, run
from rangerlab.amp import scaler_step

OURS = [c for c in CASES if not c.name.startswith("lookahead-")]


def _regression(dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 8, generator=gen)
    true_w = torch.randn(8, 1, generator=gen)
    y = x @ true_w
    w = torch.nn.Parameter(torch.ones(8, 1, dtype=dtype))
    return x, y, w


def _train(opt_factory, dtype, steps=300):
    x, y, w = _regression(dtype)
    opt = opt_factory([w])
    for _ in range(steps):
        opt.zero_grad()
        loss = ((x.to(dtype) @ w - y.to(dtype)).float() ** 2).mean()
        loss.backward()
        opt.step()
    return w.detach().float()


def test_master_weights_keep_bf16_training_on_the_fp32_track():
    """Adam at lr=1e-4 moves a weight of about 1 by 1e-4 a step, below bf16's spacing (2^-7)."""

    def adam(**kw):
        return lambda p: rangerlab.Adam(p, lr=1e-4, **kw)

    start = torch.ones(8, 1)
    fp32 = _train(adam(), torch.float32)
    stalled = _train(adam(), torch.bfloat16)
    master = _train(adam(master_weights=True), torch.bfloat16)
    moved = (fp32 - start).abs().max().item()
    assert moved > 0.02  # the fp32 run travels far in units of bf16 spacing
    assert torch.equal(stalled, start)  # every update rounded away: no progress at all
    assert (master - fp32).abs().max().item() < 2**-7  # within one bf16 spacing of fp32


def test_master_weights_live_in_state_dict_as_float32():
    w = torch.nn.Parameter(torch.ones(3, dtype=torch.bfloat16))
    opt = rangerlab.Ranger([w], lr=1e-4, master_weights=True)
    for _ in range(3):
        w.grad = torch.full_like(w, 0.5)
        opt.step()
    master = opt.state_dict()["state"][0]["master_param"]
    assert master.dtype == torch.float32 and not torch.equal(master, torch.ones(3))
    opt2 = rangerlab.Ranger([w], lr=1e-4, master_weights=True)
    opt2.load_state_dict(opt.state_dict())
    assert torch.equal(opt2.state[w]["master_param"], master)


@pytest.mark.parametrize("case", OURS, ids=str)
def test_skip_nonfinite_skips_counts_and_warns_once(case):
    params = make_params()
    opt = case.ours(params)
    for group in opt.param_groups:
        group["skip_nonfinite"] = True
    run(opt, params, 3)
    before = [p.detach().clone() for p in params]
    state = {k: v.clone() for k, v in opt.state[params[0]].items()}
    for bad in (float("nan"), float("inf")):
        for p in params:
            p.grad = torch.ones_like(p)
        params[3].grad.view(-1)[0] = bad
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            opt.step()
        assert opt.last_step_skipped
        assert len(caught) == (1 if bad != bad else 0)  # warns on the first skip only
        assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))
        assert all(torch.equal(opt.state[params[0]][k], v) for k, v in state.items())
    assert opt.skipped_steps == 2
    run(opt, params, 1)
    assert not opt.last_step_skipped and opt.skipped_steps == 2


def test_without_skip_nonfinite_torch_semantics_hold():
    w = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    opt = rangerlab.SGD([w], lr=0.1)
    w.grad = torch.tensor([float("nan"), 1.0], dtype=torch.float64)
    opt.step()
    assert torch.isnan(w[0]) and w[1].item() == 0.9 and not opt.last_step_skipped


@pytest.mark.parametrize("case", OURS, ids=str)
def test_step_inside_cpu_bf16_autocast_equals_step_outside(case):
    a, b = make_params(torch.float32), make_params(torch.float32)
    opt_a, opt_b = case.ours(a), case.ours(b)
    for _ in range(8):
        run(opt_a, a, 1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            run(opt_b, b, 1)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def _train_mlp(autocast: bool) -> list[float]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    opt = rangerlab.Ranger(model.parameters(), lr=3e-2)
    x = torch.randn(128, 16, generator=torch.Generator().manual_seed(1))
    y = x[:, :1] * 2 - x[:, 1:2]
    losses = []
    for _ in range(150):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = torch.nn.functional.mse_loss(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    return losses


def test_bf16_autocast_training_on_cpu_tracks_fp32():
    fp32, bf16 = _train_mlp(False), _train_mlp(True)
    assert fp32[-1] < 0.1 * fp32[0]
    assert bf16[-1] < 0.1 * bf16[0]
    assert abs(bf16[-1] - fp32[-1]) < 0.25 * fp32[-1]


def _scaled(params, scaler, poison=False):
    loss = sum(((p - 0.3) ** 2).sum() for p in params)
    scaler.scale(loss).backward()
    if poison:
        params[0].grad.view(-1)[0] = float("inf")


def test_scaler_step_steps_the_scheduler_only_when_the_optimizer_stepped():
    params = make_params()
    opt = rangerlab.Ranger(params, lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    taken = []
    for poison in (False, True, False, True, True):
        opt.zero_grad()
        _scaled(params, scaler, poison)
        taken.append(scaler_step(scaler, opt, sched))
    assert taken == [True, False, True, False, False]
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5**2)
    assert opt.param_groups[0]["lookahead_step"] == 2
    assert scaler.get_scale() == 2.0**7


def test_scaler_step_reports_an_optimizer_side_skip():
    params = make_params()
    opt = rangerlab.Adam(params, lr=1e-2, skip_nonfinite=True)
    scaler = torch.amp.GradScaler("cpu", enabled=False)  # nothing caught by the scaler
    for p in params:
        p.grad = torch.ones_like(p)
    params[0].grad[0, 0] = float("nan")
    with pytest.warns(RuntimeWarning, match="skipped"):
        assert scaler_step(scaler, opt) is False
    with pytest.raises(TypeError, match="scaler"):
        scaler_step(object(), opt)


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c.name in ("lars", "ranger-lars", "adamw", "lookahead-adamw")],
    ids=str,
)
def test_unscale_clip_then_step(case):
    """scaler.unscale_ + clip_grad_norm_ + scaler.step equals clipping the unscaled gradients."""
    a, b = make_params(), make_params()
    opt_a, opt_b = case.ours(a), case.ours(b)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=10**6)
    for _ in range(10):
        opt_a.zero_grad()
        _scaled(a, scaler)
        scaler.unscale_(opt_a)
        torch.nn.utils.clip_grad_norm_(a, max_norm=0.5)
        scaler.step(opt_a)
        scaler.update()
        opt_b.zero_grad()
        sum(((p - 0.3) ** 2).sum() for p in b).backward()
        torch.nn.utils.clip_grad_norm_(b, max_norm=0.5)
        opt_b.step()
    for x, y in zip(a, b):
        torch.testing.assert_close(x.detach(), y.detach(), rtol=1e-12, atol=1e-14)
