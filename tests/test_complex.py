"""Complex parameters: each is optimized exactly as its ``torch.view_as_real`` view (torch's rule).

Against torch.optim where torch has the algorithm (float64, every path), and against the same
optimizer run on the real views elsewhere (GC and the trust-ratio norms included).
"""

from __future__ import annotations

import copy

import pytest
import torch

import rangerlab

SHAPES = [(4, 3), (3,), (), (2, 3, 2), (0,)]
PATHS = {"default": {}, "foreach": {"foreach": True}, "loop": {"foreach": False}}
paths = pytest.mark.parametrize("path", sorted(PATHS))


def complex_params(seed=0) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.nn.Parameter(torch.randn(s, generator=gen, dtype=torch.complex128)) for s in SHAPES
    ]


def complex_grads(t: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + t)
    return [torch.randn(s, generator=gen, dtype=torch.complex128) for s in SHAPES]


def run_complex(opt, params, steps=12, start=0):
    for t in range(start, start + steps):
        for p, g in zip(params, complex_grads(t)):
            p.grad = g
        opt.step()


def assert_close(xs, ys, rtol=1e-12, atol=1e-14):
    for x, y in zip(xs, ys, strict=True):
        torch.testing.assert_close(x.detach(), y.detach(), rtol=rtol, atol=atol)


TORCH_CASES = {
    "adam": (
        lambda p, **kw: rangerlab.Adam(p, lr=0.05, weight_decay=0.1, **kw),
        lambda p: torch.optim.Adam(p, lr=0.05, weight_decay=0.1),
    ),
    "adamw": (
        lambda p, **kw: rangerlab.Adam(
            p, lr=0.05, weight_decay=0.1, decoupled_weight_decay=True, **kw
        ),
        lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1),
    ),
    "radam": (
        lambda p, **kw: rangerlab.RAdam(p, lr=0.05, **kw),
        lambda p: torch.optim.RAdam(p, lr=0.05),
    ),
    "sgd": (
        lambda p, **kw: rangerlab.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.1, **kw),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.1),
    ),
}


@pytest.mark.parametrize("name", sorted(TORCH_CASES))
@paths
def test_complex_trajectory_matches_torch(name, path):
    """A gradient of 1j moves the weight along -j, as torch does (not along the real axis)."""
    ours, theirs = TORCH_CASES[name]
    a, b = complex_params(), complex_params()
    opt = ours(a, **PATHS[path])
    run_complex(opt, a)
    run_complex(theirs(b), b)
    assert_close(a, b)
    for p in a:
        if p.numel():
            assert all(v.is_complex() for k, v in opt.state[p].items() if k != "step")


REAL_VIEW_CASES = {
    "lamb-gc": lambda p, **kw: rangerlab.LAMB(p, lr=0.02, weight_decay=0.1, gc=True, **kw),
    "ranger": lambda p, **kw: rangerlab.Ranger(p, lr=0.02, weight_decay=0.1, k=4, **kw),
    "ranger-lars": lambda p, **kw: rangerlab.RangerLARS(p, lr=0.02, weight_decay=0.1, k=3, **kw),
    "lars-gc": lambda p, **kw: rangerlab.LARS(
        p, lr=0.5, trust_coefficient=0.02, weight_decay=0.01, gc=True, **kw
    ),
    "larc-nesterov": lambda p, **kw: rangerlab.LARS(
        p, lr=0.5, clip=True, nesterov=True, trust_coefficient=0.5, **kw
    ),
    "adam-gc": lambda p, **kw: rangerlab.Adam(p, lr=0.05, gc=True, **kw),
    "lookahead-sgd": lambda p, **kw: rangerlab.Lookahead(
        torch.optim.SGD(p, lr=0.05, momentum=0.9), k=3
    ),
}


@pytest.mark.parametrize("name", sorted(REAL_VIEW_CASES))
@paths
def test_complex_equals_its_real_view(name, path):
    make = REAL_VIEW_CASES[name]
    a = complex_params()
    real = [torch.nn.Parameter(torch.view_as_real(p.detach()).clone()) for p in a]
    opt_a, opt_r = make(a, **PATHS[path]), make(real, **PATHS[path])
    for t in range(14):
        for p, r, g in zip(a, real, complex_grads(t)):
            p.grad, r.grad = g, torch.view_as_real(g).clone()
        opt_a.step()
        opt_r.step()
    assert_close([torch.view_as_real(p.detach()) for p in a], real)
    assert not torch.equal(a[0].detach(), complex_params()[0].detach())
    for p in a:
        if p.numel():
            assert all(v.is_complex() for k, v in opt_a.state[p].items() if k != "step")


def test_torch_checkpoint_of_complex_params_resumes_here():
    """The state stays complex, as torch keeps it, so a torch.optim.Adam checkpoint resumes."""
    a, b = complex_params(), complex_params()
    theirs = torch.optim.Adam(a, lr=0.05)
    run_complex(theirs, a, steps=5)
    for x, y in zip(a, b):
        y.data.copy_(x.data)
    ours = rangerlab.Adam(b, lr=0.05)
    ours.load_state_dict(copy.deepcopy(theirs.state_dict()))
    run_complex(theirs, a, steps=6, start=5)
    run_complex(ours, b, steps=6, start=5)
    assert_close(b, a)
    # And the other way: ours saved, torch resumes.
    again = torch.optim.Adam(a, lr=0.05)
    again.load_state_dict(copy.deepcopy(ours.state_dict()))
    for x, y in zip(a, b):
        x.data.copy_(y.data)
    run_complex(again, a, steps=3, start=11)
    run_complex(ours, b, steps=3, start=11)
    assert_close(b, a)
