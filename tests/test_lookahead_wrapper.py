"""The Lookahead wrapper around foreign optimizers, and slow-weight evaluation everywhere."""

from __future__ import annotations

import io

import pytest
import torch
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

import rangerlab
from optim_table import make_params, run, set_grads

#: Lookahead in a preset and in the wrapper: the checks that hold for both.
every_lookahead = pytest.mark.parametrize(
    "make",
    [
        lambda p: rangerlab.Ranger(p, lr=1e-2, k=4),
        lambda p: rangerlab.RangerLARS(p, lr=1e-2, k=4),
        lambda p: rangerlab.Lookahead(torch.optim.SGD(p, lr=0.05, momentum=0.9), k=4),
    ],
    ids=["ranger", "ranger_lars", "wrapper"],
)


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


@every_lookahead
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


@every_lookahead
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


def test_state_dict_keeps_entries_not_keyed_by_a_parameter():
    """What a state_dict pre-hook stashes in ``state`` survives the round trip, as in torch."""

    def stash(opt):
        opt.state["stash"] = {"epoch": 3}

    a = make_params()
    opt = rangerlab.Lookahead(torch.optim.Adam(a, lr=1e-2), k=3)
    opt.register_state_dict_pre_hook(stash)
    opt.optimizer.register_state_dict_pre_hook(lambda o: o.state.update(inner={"seen": True}))
    run(opt, a, 4)
    sd = opt.state_dict()
    assert sd["state"]["stash"] == {"epoch": 3} and sd["state"]["inner"] == {"seen": True}
    assert "slow_param" in sd["state"][0]
    b = make_params()
    again = rangerlab.Lookahead(torch.optim.Adam(b, lr=1e-2), k=3)
    again.load_state_dict(io_round_trip(sd))
    assert again.state["stash"] == {"epoch": 3}
    assert again.state_dict()["state"]["inner"] == {"seen": True}
    for x, y in zip(a, b):
        y.data.copy_(x.data)
    run(opt, a, 5)
    run(again, b, 5)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def io_round_trip(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize(
    "inner",
    [lambda p: torch.optim.SGD(p, lr=0.1), lambda p: rangerlab.Adam(p, lr=0.1)],
    ids=["torch", "rangerlab"],
)
def test_global_step_hooks_fire_once_per_step(inner):
    calls = []
    handles = [
        register_optimizer_step_pre_hook(lambda o, a, k: calls.append(("pre", type(o).__name__))),
        register_optimizer_step_post_hook(lambda o, a, k: calls.append(("post", type(o).__name__))),
    ]
    try:
        params = make_params()
        opt = rangerlab.Lookahead(inner(params), k=2)
        opt.optimizer.register_step_post_hook(lambda o, a, k: calls.append(("own", "inner")))
        run(opt, params, 3)
    finally:
        for handle in handles:
            handle.remove()
    assert calls == [("pre", "Lookahead"), ("own", "inner"), ("post", "Lookahead")] * 3


def test_a_step_the_wrapped_optimizer_skips_moves_no_counter():
    params = make_params()
    opt = rangerlab.Lookahead(rangerlab.Adam(params, lr=1e-2, skip_nonfinite=True), k=2)
    run(opt, params, 3)
    before = [p.detach().clone() for p in params]
    slow = {id(p): opt.state[p]["slow_param"].clone() for p in params}
    set_grads(params)
    params[0].grad[0, 0] = float("nan")
    with pytest.warns(RuntimeWarning, match="skipped") as record:
        opt.step()  # would have been the sync step
    assert record[0].filename == __file__  # the warning points at the user's line
    assert opt.last_step_skipped and opt.param_groups[0]["lookahead_step"] == 3
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    assert all(torch.equal(opt.state[p]["slow_param"], slow[id(p)]) for p in params)
    run(opt, params, 1)
    assert not opt.last_step_skipped and opt.param_groups[0]["lookahead_step"] == 4
    # rangerlab.amp.scaler_step reads the wrapper's answer.
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    set_grads(params)
    params[1].grad[0] = float("inf")
    assert rangerlab.amp.scaler_step(scaler, opt) is False
    set_grads(params)
    assert rangerlab.amp.scaler_step(scaler, opt) is True


def _scaled_steps(opt, params, scaler, bad_at=()):
    taken = []
    for t in range(8):
        opt.zero_grad()
        loss = sum(((p - 0.3) ** 2).sum() for p in params)
        scaler.scale(loss).backward()
        if t in bad_at:
            params[0].grad.view(-1)[0] = float("inf")
        taken.append(rangerlab.amp.scaler_step(scaler, opt))
    return taken


def test_grad_scaler_contract_is_forwarded_to_a_fused_torch_optimizer():
    """torch's fused AdamW unscales and skips inside its step; the wrapper passes that through."""
    params = make_params(torch.float32)
    opt = rangerlab.Lookahead(torch.optim.AdamW(params, lr=1e-2, fused=True), k=3)
    assert opt._step_supports_amp_scaling
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=10**6)
    taken = _scaled_steps(opt, params, scaler, bad_at=(2, 3))
    assert taken == [True, True, False, False, True, True, True, True]
    assert opt.param_groups[0]["lookahead_step"] == 6 and scaler.get_scale() == 2.0**8
    assert not hasattr(opt.optimizer, "grad_scale")
    # Same trajectory as unscaled steps that skip the two bad ones.
    ref = make_params(torch.float32)
    ref_opt = rangerlab.Lookahead(torch.optim.AdamW(ref, lr=1e-2, fused=True), k=3)
    for t in range(8):
        ref_opt.zero_grad()
        sum(((p - 0.3) ** 2).sum() for p in ref).backward()
        if t not in (2, 3):
            ref_opt.step()
    for x, y in zip(params, ref):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)


def test_scaler_step_reports_a_skip_inside_a_fused_torch_optimizer():
    params = make_params(torch.float32)
    opt = torch.optim.Adam(params, lr=1e-2, fused=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    assert _scaled_steps(opt, params, scaler, bad_at=(1,))[:3] == [True, False, True]
