"""Hand-computed values for each transform, and chains built without a new class."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rangerlab
from optim_table import make_params, run
from rangerlab import Chain
from rangerlab._ops import FOREACH, LOOP
from rangerlab.transforms import (
    Context,
    add_decayed_weights,
    centralize,
    centralized,
    lookahead,
    momentum,
    rectification,
    scale_by_adam,
    scale_by_lars,
    scale_by_radam,
    scale_by_trust_ratio,
    sync_,
)
from reference import RefLARS, RefLookahead, WithGC


def ctx_for(params, group, steps=None, states=None, ops=FOREACH):
    return Context(
        group=group,
        params=params,
        states=states or [{} for _ in params],
        steps=steps or [1] * len(params),
        ops=ops,
    )


def test_centralize_hand_value():
    g = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert torch.equal(centralized(g), torch.tensor([[-0.5, 0.5], [-0.5, 0.5]]))
    assert torch.equal(g, torch.tensor([[1.0, 2.0], [3.0, 4.0]]))  # input untouched
    u = [g.clone(), torch.tensor([1.0, 3.0]), torch.tensor(2.0)]
    out = centralize().update(u, ctx_for([torch.zeros(2, 2)] * 3, {"gc": True}))
    assert torch.equal(out[0], torch.tensor([[-0.5, 0.5], [-0.5, 0.5]]))
    assert torch.equal(out[1], torch.tensor([1.0, 3.0]))  # 1-D untouched
    assert torch.equal(out[2], torch.tensor(2.0))  # 0-D untouched
    off = centralize().update([g.clone()], ctx_for([g], {"gc": False}))
    assert torch.equal(off[0], g)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=2, max_size=4), st.integers(0, 2**16))
def test_centralized_rows_have_zero_mean_and_keep_the_rest(shape, seed):
    g = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    c = centralized(g)
    dims = tuple(range(1, g.dim()))
    assert torch.allclose(c.mean(dim=dims), torch.zeros(shape[0], dtype=torch.float64), atol=1e-12)
    # What was removed is constant across each output channel.
    assert torch.allclose((g - c).amax(dim=dims), (g - c).amin(dim=dims), atol=1e-12)


def test_weight_decay_hand_value():
    w = [torch.tensor([2.0, -4.0])]
    out = add_decayed_weights().update(
        [torch.tensor([1.0, 1.0])], ctx_for(w, {"weight_decay": 0.5})
    )
    assert torch.equal(out[0], torch.tensor([2.0, -1.0]))


def test_momentum_hand_values():
    t = momentum()
    state = [{}]
    group = {"momentum": 0.5, "dampening": 0.0, "nesterov": False}
    first = t.update([torch.tensor([2.0])], ctx_for([torch.zeros(1)], group, states=state))
    assert torch.equal(first[0], torch.tensor([2.0]))  # v_1 = d, as torch.optim.SGD
    second = t.update([torch.tensor([4.0])], ctx_for([torch.zeros(1)], group, states=state))
    assert torch.equal(second[0], torch.tensor([5.0]))  # 0.5*2 + 4
    nesterov = t.update(
        [torch.tensor([1.0])], ctx_for([torch.zeros(1)], {**group, "nesterov": True}, states=state)
    )
    assert torch.equal(nesterov[0], torch.tensor([2.75]))  # v = 0.5*5 + 1 = 3.5; 1 + 0.5*3.5


def test_adam_first_step_is_sign_like():
    state = [scale_by_adam().init(torch.zeros(2), {})]
    out = scale_by_adam().update(
        [torch.tensor([3.0, -0.5])],
        ctx_for([torch.zeros(2)], {"betas": (0.9, 0.999), "eps": 0.0}, states=state),
    )
    assert torch.allclose(out[0], torch.tensor([1.0, -1.0]))


def test_radam_rectification_threshold_and_value():
    beta2 = 0.999
    assert [rectification(t, beta2) is None for t in range(1, 8)] == [True] * 5 + [False] * 2
    rho_inf = 2 / (1 - beta2) - 1
    rho_6 = rho_inf - 2 * 6 * beta2**6 / (1 - beta2**6)
    expected = math.sqrt(
        (rho_6 - 4) * (rho_6 - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_6)
    )
    assert rectification(6, beta2) == pytest.approx(expected, rel=1e-15)
    # Early steps are bias-corrected momentum: at t=1, u = g exactly.
    state = [scale_by_radam().init(torch.zeros(2), {})]
    out = scale_by_radam().update(
        [torch.tensor([3.0, -0.5])],
        ctx_for([torch.zeros(2)], {"betas": (0.9, beta2), "eps": 1e-8}, states=state),
    )
    assert torch.allclose(out[0], torch.tensor([3.0, -0.5]))


def test_lars_trust_ratio_hand_values():
    w = [torch.tensor([3.0, 4.0]), torch.zeros(2), torch.tensor([1.0, 0.0])]
    u = [torch.tensor([0.0, 2.0]), torch.tensor([1.0, 1.0]), torch.zeros(2)]
    group = {
        "trust_coefficient": 0.1,
        "eps": 0.0,
        "clip": False,
        "trust_ratio": True,
        "weight_decay": 0.0,
        "lr": 1.0,
    }
    out = scale_by_lars().update([x.clone() for x in u], ctx_for(w, group))
    assert torch.allclose(out[0], torch.tensor([0.0, 0.5]))  # trust = .1*5/2 = .25
    assert torch.equal(out[1], u[1])  # ||w|| = 0: trust 1
    assert torch.equal(out[2], u[2])  # ||g|| = 0: trust 1
    # LARC: min(trust/lr, 1): trust .25 at lr .1 clips to 1; weight decay joins before scaling.
    clipped = scale_by_lars().update(
        [u[0].clone()], ctx_for(w[:1], {**group, "clip": True, "lr": 0.1})
    )
    assert torch.equal(clipped[0], u[0])
    decayed = scale_by_lars().update([u[0].clone()], ctx_for(w[:1], {**group, "weight_decay": 0.2}))
    trust = 0.1 * 5 / (2 + 0.2 * 5)
    assert torch.allclose(decayed[0], trust * (u[0] + 0.2 * w[0]))


def test_lamb_trust_ratio_hand_values():
    w = [torch.tensor([3.0, 4.0]), torch.tensor([30.0, 40.0]), torch.zeros(2)]
    u = [torch.tensor([0.0, 0.5]), torch.tensor([0.0, 0.5]), torch.tensor([1.0, 0.0])]
    group = {"max_weight_norm": 10.0, "trust_ratio": True}
    out = scale_by_trust_ratio().update([x.clone() for x in u], ctx_for(w, group))
    assert torch.allclose(out[0], torch.tensor([0.0, 5.0]))  # ratio 5/0.5 = 10
    assert torch.allclose(out[1], torch.tensor([0.0, 10.0]))  # ||w|| capped at 10
    assert torch.equal(out[2], u[2])  # ||w|| = 0: ratio 1
    off = scale_by_trust_ratio().update(
        [u[0].clone()], ctx_for(w[:1], {**group, "trust_ratio": False})
    )
    assert torch.equal(off[0], u[0])


@pytest.mark.parametrize("ops", [FOREACH, LOOP], ids=["foreach", "loop"])
def test_lookahead_sync_kernel(ops):
    fast, slow = [torch.tensor([4.0])], [torch.tensor([0.0])]
    sync_(ops, fast, slow, 0.5)
    assert fast[0].item() == slow[0].item() == 2.0


@pytest.mark.parametrize(
    "make",
    [
        lambda x: Chain([x], [lookahead()], lr=1.0, k=3, alpha=0.5),
        lambda x: rangerlab.Lookahead(torch.optim.SGD([x], lr=1.0), k=3, alpha=0.5),
    ],
    ids=["chain", "wrapper"],
)
def test_lookahead_analytic_path(make):
    """On f(x) = x with plain SGD(lr=1), k=3, alpha=0.5, from x=3 (cf. optax's lookahead test)."""
    x = torch.nn.Parameter(torch.tensor(3.0))
    opt = make(x)
    path = []
    for _ in range(6):
        x.grad = torch.tensor(1.0)
        opt.step()
        path.append(x.item())
    # 3 -> 2 -> 1 -> 0, sync: slow 3 + .5*(0-3) = 1.5; 1.5 -> .5 -> -.5 -> -1.5, sync: 0
    assert path == [2.0, 1.0, 1.5, 0.5, -0.5, 0.0]
    assert opt.param_groups[0]["lookahead_step"] == 6


def _lamb_reference(params, lr, weight_decay, eps=1e-6):
    state = {}

    def step():
        with torch.no_grad():
            for p in params:
                s = state.setdefault(
                    p, {"t": 0, "m": torch.zeros_like(p), "v": torch.zeros_like(p)}
                )
                s["t"] += 1
                s["m"] = 0.9 * s["m"] + 0.1 * p.grad
                s["v"] = 0.999 * s["v"] + 0.001 * p.grad**2
                u = (s["m"] / (1 - 0.9 ** s["t"])) / ((s["v"] / (1 - 0.999 ** s["t"])).sqrt() + eps)
                u = u + weight_decay * p
                wn, un = float(p.norm()), float(u.norm())
                ratio = wn / un if wn > 0 and un > 0 else 1.0
                p.sub_(lr * ratio * u)

    return step


def test_chain_lamb_matches_the_lamb_formula():
    ours_p, ref_p = make_params(), make_params()
    lamb = Chain(
        ours_p,
        [scale_by_adam(), add_decayed_weights(), scale_by_trust_ratio()],
        lr=1e-2,
        weight_decay=0.05,
        eps=1e-6,
        max_weight_norm=None,
    )
    run(lamb, ours_p, 40)
    ref_step = _lamb_reference(ref_p, 1e-2, 0.05)

    class Stepper:
        def step(self):
            ref_step()

    run(Stepper(), ref_p, 40)
    for a, b in zip(ours_p, ref_p):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-9, atol=1e-12)


def test_chain_gc_adamw_lookahead_matches_lookahead_over_torch_adamw():
    ours_p, ref_p = make_params(), make_params()
    ours = Chain(
        ours_p,
        [centralize(), scale_by_adam(), add_decayed_weights(), lookahead()],
        lr=1e-2,
        weight_decay=0.1,
        k=5,
        alpha=0.5,
    )
    ref = RefLookahead(WithGC(torch.optim.AdamW(ref_p, lr=1e-2, weight_decay=0.1)), 5, 0.5)
    run(ours, ours_p, 64)
    run(ref, ref_p, 64)
    for a, b in zip(ours_p, ref_p):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-9, atol=1e-12)


def test_chain_lars_over_nesterov_matches_lars_preset_and_reference():
    kw = dict(lr=0.3, momentum=0.9, nesterov=True, weight_decay=1e-3, trust_coefficient=0.02)
    chained_p, preset_p, ref_p = make_params(), make_params(), make_params()
    run(Chain(chained_p, [scale_by_lars(), momentum()], **kw), chained_p, 64)
    run(rangerlab.LARS(preset_p, **kw), preset_p, 64)
    run(RefLARS(ref_p, **kw), ref_p, 64)
    for a, b, c in zip(chained_p, preset_p, ref_p):
        assert torch.equal(a, b)
        torch.testing.assert_close(a.detach(), c.detach(), rtol=1e-9, atol=1e-12)


def test_chain_rejects_unknown_hyperparameters_and_non_transforms():
    params = make_params()
    with pytest.raises(TypeError, match="betas2.*valid: .*betas"):
        Chain(params, [scale_by_adam()], betas2=0.9)
    with pytest.raises(TypeError, match="Transform"):
        Chain(params, [scale_by_adam(), "lookahead"])
    with pytest.raises(ValueError, match="exp_avg"):
        Chain(params, [scale_by_adam(), scale_by_radam()])


def test_chain_declares_transform_defaults_in_groups():
    opt = Chain(make_params(), [centralize(), scale_by_adam(), lookahead()], lr=0.1, k=4)
    group = opt.param_groups[0]
    assert group["betas"] == (0.9, 0.999) and group["eps"] == 1e-8
    assert group["k"] == 4 and group["alpha"] == 0.5 and group["gc"] is True
    assert group["lr"] == 0.1
