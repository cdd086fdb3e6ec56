"""Schedules: lr at exact steps against closed forms and torch's own schedulers; state_dict."""

import io
import math

import pytest
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler

import rangerlab
from rangerlab.schedules import flat_cosine, linear_warmup, untuned_warmup, warmup_cosine


def make_opt(lrs=(0.1, 0.01), cls=rangerlab.Adam, **kwargs):
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in lrs]
    return cls(groups, **kwargs)


def lrs_over(opt, sched, steps):
    """``out[t][i]``: group i's lr for the (t+1)-th optimizer step."""
    out = []
    for _ in range(steps):
        out.append(tuple(g["lr"] for g in opt.param_groups))
        opt.step()
        sched.step()
    return out


def flat(rows):
    return [lr for row in rows for lr in row]


def test_linear_warmup_closed_form_and_torch_linear_lr():
    opt = make_opt()
    got = lrs_over(opt, linear_warmup(opt, 4), 7)
    want = [lr * min(1.0, (t + 1) / 4) for t in range(7) for lr in (0.1, 0.01)]
    assert flat(got) == pytest.approx(want, rel=1e-12)
    ref_opt = make_opt()
    ref = LinearLR(ref_opt, start_factor=1 / 4, total_iters=3)
    assert flat(got) == pytest.approx(flat(lrs_over(ref_opt, ref, 7)), rel=1e-12)


def test_untuned_warmup_reads_beta2_from_the_optimizer():
    opt = make_opt(betas=(0.9, 0.99))  # 2/(1-0.99) = 200 steps
    lrs = [g[0] for g in lrs_over(opt, untuned_warmup(opt), 202)]
    assert lrs[0] == pytest.approx(0.1 / 200, rel=1e-12)
    assert lrs[99] == pytest.approx(0.1 * 100 / 200, rel=1e-12)  # Ma & Yarats: t(1-b2)/2 at t=100
    assert lrs[198] < 0.1 and lrs[199] == pytest.approx(0.1) and lrs[201] == pytest.approx(0.1)


def test_untuned_warmup_through_lookahead_and_explicit_beta2():
    opt = rangerlab.Lookahead(make_opt(betas=(0.9, 0.999)))
    sched = untuned_warmup(opt)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 / 2000, rel=1e-12)
    sched = untuned_warmup(make_opt(), beta2=0.98)
    assert sched.optimizer.param_groups[1]["lr"] == pytest.approx(0.01 / 100, rel=1e-12)


def test_flat_cosine_closed_form():
    opt = make_opt()
    got = [g[0] for g in lrs_over(opt, flat_cosine(opt, 100), 120)]
    assert got[:73] == pytest.approx([0.1] * 73, rel=1e-12)  # flat through D = 72
    for t in (80, 86, 99):
        assert got[t] == pytest.approx(0.1 * (1 + math.cos(math.pi * (t - 72) / 28)) / 2, rel=1e-12)
    assert got[86] == pytest.approx(0.05, rel=1e-12)  # halfway down the anneal
    assert got[100:] == pytest.approx([0.0] * 20, abs=1e-15)


def test_warmup_cosine_reaches_min_lr_in_every_group():
    opt = make_opt()
    got = lrs_over(opt, warmup_cosine(opt, 10, 50, min_lr=0.001), 60)
    for i, lr in enumerate((0.1, 0.01)):
        assert got[0][i] == pytest.approx(lr / 10, rel=1e-12)
        assert got[9][i] == pytest.approx(lr, rel=1e-12)
        assert got[30][i] == pytest.approx((lr + 0.001) / 2, rel=1e-12)
        assert got[50][i] == pytest.approx(0.001, rel=1e-12)
        assert got[59][i] == pytest.approx(0.001, rel=1e-12)


def test_warmup_cosine_without_warmup_is_torch_cosine_annealing():
    opt, ref_opt = make_opt(), make_opt()
    got = lrs_over(opt, warmup_cosine(opt, 0, 40, min_lr=0.002), 40)
    want = lrs_over(ref_opt, CosineAnnealingLR(ref_opt, T_max=40, eta_min=0.002), 40)
    assert flat(got) == pytest.approx(flat(want), rel=1e-9)


@pytest.mark.parametrize(
    "build",
    [
        lambda o: linear_warmup(o, 20),
        lambda o: untuned_warmup(o),
        lambda o: flat_cosine(o, 50, flat_fraction=0.5),
        lambda o: warmup_cosine(o, 5, 50, min_lr=1e-4),
    ],
)
def test_state_dict_resume_continues_exactly(build):
    opt = make_opt(betas=(0.9, 0.95))
    sched = build(opt)
    assert isinstance(sched, LRScheduler)
    lrs_over(opt, sched, 23)
    buffer = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed_opt = make_opt(betas=(0.9, 0.95))
    resumed = build(resumed_opt)
    resumed_opt.load_state_dict(saved["opt"])
    resumed.load_state_dict(saved["sched"])
    assert lrs_over(resumed_opt, resumed, 20) == lrs_over(opt, sched, 20)


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="warmup_steps: 0"):
        linear_warmup(make_opt(), 0)
    with pytest.raises(ValueError, match="beta2: None.*pass beta2"):
        untuned_warmup(make_opt(cls=rangerlab.SGD, lr=0.1))
    with pytest.raises(ValueError, match="beta2: 1.0"):
        untuned_warmup(make_opt(), beta2=1.0)
    with pytest.raises(ValueError, match="flat_fraction: 1.5"):
        flat_cosine(make_opt(), 100, flat_fraction=1.5)
    with pytest.raises(ValueError, match="total_steps: 5"):
        warmup_cosine(make_opt(), 10, 5)
    with pytest.raises(ValueError, match="min_lr: 0.05"):
        warmup_cosine(make_opt(), 0, 10, min_lr=0.05)
