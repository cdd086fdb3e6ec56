"""One table of every optimizer with a few settings each, and the problem they all run on.

Each :class:`Case` pairs a rangerlab optimizer with its reference: torch.optim where torch has the
algorithm (with Gradient Centralization applied to the reference's own gradients when ``gc`` is
on), the per-tensor formulas of ``reference.py`` otherwise. The generic checks in
``test_optim_generic.py`` run every case.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

import rangerlab
from reference import RefLAMB, RefLARS, RefLookahead, RefRAdamLAMB, WithGC

SHAPES = [(4, 3), (3,), (), (2, 3, 2, 2), (0,), (5, 2)]


#: The arguments that put an optimizer on each path. A case lists the paths it runs on, so a new
#: path (a CUDA kernel) is one entry here and one name in the cases that have it.
PATHS: dict[str, dict[str, Any]] = {
    "loop": {"foreach": False},
    "foreach": {"foreach": True},
    "fused": {"fused": True},
}
CHAIN_PATHS = ("loop", "foreach", "fused")


@dataclass(frozen=True)
class Case:
    """One optimizer with one setting, torch's OptimizerInfo style.

    ``ours(params, **path_kwargs)`` builds it (``PATHS[path]`` picks a path), ``ref(params)`` its
    reference; ``second`` holds overrides for a second param group (the fused tests use them);
    ``paths`` are the paths it runs on (a Lookahead wrapper around a torch optimizer has only
    torch's own, "torch").
    """

    name: str
    ours: Callable[..., torch.optim.Optimizer]
    ref: Callable[[Any], Any]
    kwargs: dict = field(default_factory=dict)
    lookahead: bool = False
    paths: tuple[str, ...] = CHAIN_PATHS
    second: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name


def with_path(path: str) -> list[Case]:
    """The cases that run on ``path``."""
    return [case for case in CASES if path in case.paths]


def _gc(gc: bool, inner):
    return WithGC(inner) if gc else inner


def same_arguments(ours_cls, ref_cls):
    """A case builder for optimizers whose reference takes the same arguments, less ``gc``."""

    def build(name, gc=False, second=None, **kw):
        return Case(
            name,
            lambda p, **path: ours_cls(p, gc=gc, **kw, **path),
            lambda p: _gc(gc, ref_cls(p, **kw)),
            {**kw, "gc": gc},
            second=second or {},
        )

    return build


sgd = same_arguments(rangerlab.SGD, torch.optim.SGD)
radam = same_arguments(rangerlab.RAdam, torch.optim.RAdam)
lars = same_arguments(rangerlab.LARS, RefLARS)
lamb = same_arguments(rangerlab.LAMB, RefLAMB)


def adam(name, second=None, **kw):
    gc = kw.pop("gc", False)
    decoupled = kw.pop("decoupled_weight_decay", False)
    torch_cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    ref_kw = dict(kw)
    if decoupled:  # torch's AdamW defaults to weight_decay=0.01; ours to 0
        ref_kw.setdefault("weight_decay", 0.0)
    return Case(
        name,
        lambda p, **path: rangerlab.Adam(p, gc=gc, decoupled_weight_decay=decoupled, **kw, **path),
        lambda p: _gc(gc, torch_cls(p, **ref_kw)),
        {**kw, "gc": gc, "decoupled_weight_decay": decoupled},
        second=second or {},
    )


def ranger(name, k=6, alpha=0.5, gc=True, second=None, **kw):
    return Case(
        name,
        lambda p, **path: rangerlab.Ranger(p, k=k, alpha=alpha, gc=gc, **kw, **path),
        lambda p: RefLookahead(
            _gc(
                gc,
                torch.optim.RAdam(
                    p, **{"betas": (0.95, 0.999), "eps": 1e-5, **kw}, decoupled_weight_decay=True
                ),
            ),
            k,
            alpha,
        ),
        {**kw, "k": k, "alpha": alpha, "gc": gc},
        lookahead=True,
        second=second or {},
    )


def ranger_lars(name, k=6, alpha=0.5, gc=True, second=None, **kw):
    return Case(
        name,
        lambda p, **path: rangerlab.RangerLARS(p, k=k, alpha=alpha, gc=gc, **kw, **path),
        lambda p: RefLookahead(_gc(gc, RefRAdamLAMB(p, **kw)), k, alpha),
        {**kw, "k": k, "alpha": alpha, "gc": gc},
        lookahead=True,
        second=second or {},
    )


def lookahead_over(name, torch_cls, k=5, alpha=0.6, **kw):
    return Case(
        name,
        lambda p: rangerlab.Lookahead(torch_cls(p, **kw), k=k, alpha=alpha),
        lambda p: RefLookahead(torch_cls(p, **kw), k, alpha),
        {**kw, "k": k, "alpha": alpha},
        lookahead=True,
        paths=("torch",),
    )


CASES = [
    sgd("sgd", lr=0.1, second=dict(lr=0.3)),
    sgd("sgd-momentum", lr=0.05, momentum=0.9),
    sgd(
        "sgd-nesterov-wd",
        lr=0.05,
        momentum=0.9,
        nesterov=True,
        weight_decay=1e-2,
        second=dict(nesterov=False, dampening=0.3),
    ),
    sgd("sgd-dampening-wd-gc", lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.1, gc=True),
    adam("adam", lr=1e-2),
    adam("adam-l2", lr=1e-2, weight_decay=0.1, second=dict(lr=3e-2, betas=(0.8, 0.99))),
    adam(
        "adamw",
        lr=1e-2,
        weight_decay=0.1,
        decoupled_weight_decay=True,
        second=dict(weight_decay=0.0),
    ),
    adam("adam-betas-eps-gc", lr=2e-2, betas=(0.8, 0.99), eps=1e-6, gc=True),
    radam("radam", lr=1e-2),
    radam("radam-l2", lr=1e-2, weight_decay=0.1, second=dict(eps=1e-3, betas=(0.3, 0.9))),
    radam(
        "radam-decoupled-gc",
        lr=1e-2,
        weight_decay=0.1,
        decoupled_weight_decay=True,
        gc=True,
        second=dict(gc=False),
    ),
    radam("radam-short-beta2", lr=1e-2, betas=(0.9, 0.9)),
    lars("lars", lr=0.5, trust_coefficient=0.02),
    lars(
        "lars-nesterov-wd",
        lr=0.5,
        momentum=0.9,
        nesterov=True,
        weight_decay=1e-3,
        trust_coefficient=0.02,
    ),
    lars(
        "larc-clip",
        lr=0.5,
        clip=True,
        weight_decay=1e-2,
        trust_coefficient=0.5,
        second=dict(eps=1e-3),
    ),
    lars(
        "lars-dampening-gc",
        lr=0.3,
        dampening=0.2,
        trust_coefficient=0.05,
        gc=True,
        second=dict(trust_ratio=False),
    ),
    lamb("lamb", lr=1e-2),
    lamb("lamb-wd-gc", lr=1e-2, weight_decay=0.1, gc=True, second=dict(trust_ratio=False)),
    lamb("lamb-nocap-betas", lr=2e-2, max_weight_norm=None, betas=(0.8, 0.99)),
    ranger("ranger", lr=1e-2),
    ranger("ranger-wd-k5", lr=1e-2, weight_decay=0.1, k=5, alpha=0.8, second=dict(alpha=0.3)),
    ranger("ranger-nogc", lr=2e-2, gc=False, betas=(0.9, 0.99)),
    ranger_lars("ranger-lars", lr=1e-2, second=dict(max_weight_norm=None)),
    ranger_lars("ranger-lars-wd-nocap", lr=1e-2, weight_decay=0.1, max_weight_norm=None),
    ranger_lars(
        "ranger-lars-capped-k4",
        lr=1e-2,
        max_weight_norm=0.5,
        k=4,
        alpha=0.3,
        second=dict(trust_ratio=False),
    ),
    lookahead_over("lookahead-sgd", torch.optim.SGD, lr=0.05, momentum=0.9),
    lookahead_over("lookahead-adamw", torch.optim.AdamW, lr=1e-2, weight_decay=0.1),
]


def initial_tensors(dtype=torch.float64, seed=0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in SHAPES]


def _targets(dtype):
    gen = torch.Generator().manual_seed(1234)
    targets = [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in SHAPES]
    scales = [(torch.rand(s, generator=gen, dtype=torch.float64) + 0.5).to(dtype) for s in SHAPES]
    return targets, scales


def gradients(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """Gradient of sum(c*logcosh(p - t) + 0.15*(p - t)^2): smooth, non-quadratic, per element."""
    targets, scales = _targets(params[0].dtype)
    return [
        c * torch.tanh(p.detach() - t) + 0.3 * (p.detach() - t)
        for p, t, c in zip(params, targets, scales)
    ]


def make_params(dtype=torch.float64, seed=0) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(x) for x in initial_tensors(dtype, seed)]


def set_grads(params, skip=()) -> None:
    for i, (p, g) in enumerate(zip(params, gradients(params))):
        p.grad = None if i in skip else g


def run(opt, params, steps, skip_at=None, before_step=None) -> None:
    """Step ``opt`` ``steps`` times; ``skip_at(step) -> indices`` leaves those grads None."""
    for t in range(steps):
        set_grads(params, skip_at(t) if skip_at else ())
        if before_step:
            before_step(t)
        opt.step()


def torch_target(ref):
    """The torch optimizer inside a reference wrapper (for LR schedulers)."""
    while not isinstance(ref, torch.optim.Optimizer):
        ref = ref.inner
    return ref
