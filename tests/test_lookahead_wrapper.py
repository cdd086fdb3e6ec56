"""The Lookahead wrapper around foreign optimizers, and slow-weight evaluation everywhere."""

from __future__ import annotations

import io

import pytest
import torch

import rangerlab
from optim_table import make_params, run


def test_ranger_equals_lookahead_over_radam_decoupled_with_gc():
    kw = dict(lr=1e-2, betas=(0.95, 0.999), eps=1e-5, weight_decay=0.1)
    a, b = make_params(), make_params()
    run(rangerlab.Ranger(a, k=5, alpha=0.7, **kw), a, 64)
    inner = rangerlab.RAdam(b, decoupled_weight_decay=True, gc=True, **kw)
    run(rangerlab.Lookahead(inner, k=5, alpha=0.7), b, 64)
    for x, y in zip(a, b):
        torch.testing.assert_close(x.detach(), y.detach(), rtol=1e-12, atol=1e-14)


def test_wraps_torch_fused_adamw():
    a, b = make_params(torch.float32), make_params(torch.float32)
    fused = rangerlab.Lookahead(torch.optim.AdamW(a, lr=1e-2, fused=True), k=4, alpha=0.5)
    plain = rangerlab.Lookahead(torch.optim.AdamW(b, lr=1e-2, foreach=False), k=4, alpha=0.5)
    run(fused, a, 20)
    run(plain, b, 20)
    for x, y in zip(a, b):
        torch.testing.assert_close(x.detach(), y.detach(), rtol=1e-5, atol=1e-6)


def test_rejects_non_optimizers_and_bad_settings():
    with pytest.raises(TypeError, match="Optimizer"):
        rangerlab.Lookahead(make_params())
    opt = torch.optim.SGD(make_params(), lr=0.1)
    with pytest.raises(ValueError, match="k: 0"):
        rangerlab.Lookahead(opt, k=0)
    with pytest.raises(ValueError, match="k: 2.5"):
        rangerlab.Lookahead(opt, k=2.5)
    with pytest.raises(ValueError, match="alpha: 1.5"):
        rangerlab.Lookahead(opt, alpha=1.5)
    with pytest.raises(ValueError, match="alpha: 0"):
        rangerlab.Lookahead(opt, alpha=0)


def test_shares_param_groups_with_the_wrapped_optimizer():
    inner = torch.optim.SGD(make_params(), lr=0.1)
    opt = rangerlab.Lookahead(inner, k=4)
    assert opt.param_groups is inner.param_groups
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    run(opt, [p for g in opt.param_groups for p in g["params"]], 1)
    sched.step()
    assert inner.param_groups[0]["lr"] == 0.05
    extra = torch.nn.Parameter(torch.ones(2))
    opt.add_param_group({"params": [extra], "alpha": 0.25})
    assert inner.param_groups[-1]["params"] == [extra]
    assert opt.param_groups[-1]["alpha"] == 0.25 and opt.param_groups[-1]["k"] == 4
    with pytest.raises(ValueError, match="alpha"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(1))], "alpha": -1})


def test_state_dict_holds_inner_state_and_slow_weights_and_resumes_mid_cycle():
    a = make_params()
    opt = rangerlab.Lookahead(torch.optim.Adam(a, lr=1e-2), k=6, alpha=0.5)
    run(opt, a, 9)
    sd = opt.state_dict()
    assert {"exp_avg", "exp_avg_sq", "step", "slow_param"} <= set(sd["state"][0])
    assert sd["param_groups"][0]["lookahead_step"] == 9
    buffer = io.BytesIO()
    torch.save({"p": [p.detach() for p in a], "opt": sd}, buffer)
    run(opt, a, 8)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    b = [torch.nn.Parameter(x.clone()) for x in saved["p"]]
    opt2 = rangerlab.Lookahead(torch.optim.Adam(b, lr=1e-2), k=6, alpha=0.5)
    opt2.load_state_dict(saved["opt"])
    run(opt2, b, 8)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_state_dict_hooks_run_on_the_wrapper():
    opt = rangerlab.Lookahead(torch.optim.SGD(make_params(), lr=0.1))
    seen = []
    opt.register_state_dict_post_hook(lambda o, sd: seen.append(sorted(sd)))
    opt.register_load_state_dict_post_hook(lambda o: seen.append("loaded"))
    opt.load_state_dict(opt.state_dict())
    assert seen == [["param_groups", "state"], "loaded"]


@pytest.mark.parametrize(
    "make",
    [
        lambda p: rangerlab.Ranger(p, lr=1e-2, k=4),
        lambda p: rangerlab.RangerLARS(p, lr=1e-2, k=4),
        lambda p: rangerlab.Lookahead(torch.optim.SGD(p, lr=0.05, momentum=0.9), k=4),
    ],
    ids=["ranger", "ranger_lars", "wrapper"],
)
def test_slow_weights_context_swaps_in_and_restores(make):
    params = make_params()
    opt = make(params)
    run(opt, params, 6)  # mid-cycle: fast and slow differ
    fast = [p.detach().clone() for p in params]
    slow = [opt.state[p]["slow_param"].clone() for p in params]
    assert not torch.equal(fast[0], slow[0])
    with opt.slow_weights():
        for p, s in zip(params, slow):
            assert torch.equal(p.detach(), s)
    for p, f in zip(params, fast):
        assert torch.equal(p.detach(), f)


def test_slow_weights_start_at_the_weights_before_the_first_update():
    x = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    opt = rangerlab.Ranger([x], lr=0.1, k=6)
    x.grad = torch.tensor([1.0, 1.0])
    opt.step()
    assert torch.equal(opt.state[x]["slow_param"], torch.tensor([1.0, 2.0]))
    y = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    wrapped = rangerlab.Lookahead(torch.optim.SGD([y], lr=0.1), k=6)
    y.grad = torch.tensor([1.0, 1.0])
    wrapped.step()
    assert torch.equal(wrapped.state[y]["slow_param"], torch.tensor([1.0, 2.0]))


@pytest.mark.parametrize(
    "make",
    [
        lambda p: rangerlab.Ranger(p),
        lambda p: rangerlab.Lookahead(torch.optim.SGD(p, lr=0.1)),
    ],
    ids=["ranger", "lookahead"],
)
def test_refuses_to_wrap_an_optimizer_that_already_runs_lookahead(make):
    with pytest.raises(ValueError, match="already applies Lookahead"):
        rangerlab.Lookahead(make(make_params()))


@pytest.mark.parametrize(
    "make",
    [
        lambda p: rangerlab.Ranger(p, lr=1e-2, k=4),
        lambda p: rangerlab.RangerLARS(p, lr=1e-2, k=4),
        lambda p: rangerlab.Lookahead(torch.optim.SGD(p, lr=0.05, momentum=0.9), k=4),
    ],
    ids=["ranger", "ranger_lars", "wrapper"],
)
def test_a_step_without_any_gradient_moves_no_counter(make):
    """As in torch, parameters without gradients change nothing: the Lookahead counter neither."""
    a, b = make_params(), make_params()
    opt_a, opt_b = make(a), make(b)
    for t in range(10):
        run(opt_a, a, 1)
        run(opt_b, b, 1)
        if t in (0, 5):
            for p in b:
                p.grad = None
            for _ in range(7):
                opt_b.step()
                opt_b.step(lambda: None)  # a closure that computes no gradient either
    assert [g["lookahead_step"] for g in opt_b.param_groups] == [10]
    for x, y in zip(a, b):
        assert torch.equal(x.detach(), y.detach())
    fresh = make(make_params())
    fresh.step()
    assert fresh.param_groups[0]["lookahead_step"] == 0 and not fresh.state
