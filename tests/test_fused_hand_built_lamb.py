"""The README's hand-built LAMB chain takes the fused step, and it equals the reference path.

README, "Performance": a hand-built ``Chain`` uses the fused step when its links are a known
composition, e.g. LAMB ``[scale_by_adam(), add_decayed_weights(), scale_by_trust_ratio()]``.
``fused=True`` raises where a chain has no kernel, so a run with it proves the kernel was taken.
"""

from __future__ import annotations

import pytest
import torch

import rangerlab
from rangerlab import fused
from rangerlab.transforms import add_decayed_weights, momentum, scale_by_adam, scale_by_trust_ratio

pytestmark = pytest.mark.skipif(not fused.available(), reason="no C++ compiler for the kernels")

SHAPES = [(4, 7), (5,), (6, 3, 3), ()]
# eps as LAMB's preset (Adam's default is 1e-8), so the chain and the preset are the same algorithm.
SETTINGS = dict(lr=1e-2, eps=1e-6, weight_decay=0.1, max_weight_norm=None)


def readme_lamb(params, **path):
    """The sentence's own chain, as the README's composing example builds it."""
    links = [scale_by_adam(), add_decayed_weights(), scale_by_trust_ratio()]
    return rangerlab.Chain(params, links, **SETTINGS, **path)


def trajectory(make, steps=12):
    gen = torch.Generator().manual_seed(0)
    params = [
        torch.nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float64)) for s in SHAPES
    ]
    opt = make(params)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        opt.step()
    return [p.detach() for p in params], opt


def test_the_chain_has_a_fused_kernel():
    links = [scale_by_adam(), add_decayed_weights(), scale_by_trust_ratio()]
    assert fused.kernel_for(links) is not None
    assert fused.kernel_for([momentum(), scale_by_adam()]) is None  # not every chain has one


def test_fused_true_runs_and_equals_the_reference_path():
    fused_params, opt = trajectory(lambda p: readme_lamb(p, fused=True))
    reference, _ = trajectory(lambda p: readme_lamb(p, foreach=True))
    for a, b in zip(fused_params, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)
    assert set(opt.state[opt.param_groups[0]["params"][0]]) == {"step", "exp_avg", "exp_avg_sq"}


def test_the_default_takes_the_fused_step_too():
    default, _ = trajectory(readme_lamb)
    forced, _ = trajectory(lambda p: readme_lamb(p, fused=True))
    for a, b in zip(default, forced, strict=True):
        assert torch.equal(a, b)


def test_the_chain_is_the_lamb_preset():
    chain, _ = trajectory(lambda p: readme_lamb(p, foreach=True))
    preset, _ = trajectory(lambda p: rangerlab.LAMB(p, **SETTINGS, foreach=True))
    for a, b in zip(chain, preset, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)
