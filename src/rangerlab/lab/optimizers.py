"""The optimizers the lab compares, by name: torch.optim for the baselines torch has, rangerlab
for the rest."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

import rangerlab

Factory = Callable[..., torch.optim.Optimizer]

#: name -> (label, factory(params, lr)). The factories fix every setting but the learning rate.
OPTIMIZERS: dict[str, tuple[str, Factory]] = {
    "sgd": ("SGD", lambda p, lr: torch.optim.SGD(p, lr=lr)),
    "momentum": ("SGD+momentum", lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9)),
    "adam": ("Adam", lambda p, lr: torch.optim.Adam(p, lr=lr)),
    "adamw": ("AdamW", lambda p, lr: torch.optim.AdamW(p, lr=lr, weight_decay=1e-2)),
    "radam": ("RAdam", lambda p, lr: torch.optim.RAdam(p, lr=lr)),
    "lookahead-adam": (
        "Lookahead(Adam)",
        lambda p, lr: rangerlab.Lookahead(torch.optim.Adam(p, lr=lr), k=6, alpha=0.5),
    ),
    "ranger": ("Ranger", lambda p, lr: rangerlab.Ranger(p, lr=lr)),
    "lars": ("LARS", lambda p, lr: rangerlab.LARS(p, lr=lr, momentum=0.9)),
    "ranger-lars": ("Ranger-LARS", lambda p, lr: rangerlab.RangerLARS(p, lr=lr)),
}

#: Reference rates: each trains the digits CNN well in a few epochs at batch 64 (the
#: lr-sensitivity experiment shows the whole curve around them).
CNN_LR: dict[str, float] = {
    "sgd": 0.1,
    "momentum": 0.03,
    "adam": 3e-3,
    "adamw": 3e-3,
    "radam": 3e-3,
    "lookahead-adam": 3e-3,
    "ranger": 1e-2,
    "lars": 3.0,
    "ranger-lars": 1e-2,
}


def label(name: str) -> str:
    """The human-readable name of optimizer ``name``."""
    return OPTIMIZERS[name][0]


def make_optimizer(name: str, params: Iterable, lr: float) -> torch.optim.Optimizer:
    """Build optimizer ``name`` (a key of :data:`OPTIMIZERS`) over ``params`` with rate ``lr``."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name][1](params, lr)


def make_gc_optimizer(name: str, params: Iterable, lr: float, gc: bool) -> torch.optim.Optimizer:
    """rangerlab's ``name`` (adam, radam, ranger or momentum) with GC on or off (``gc``)."""
    builders: dict[str, Factory] = {
        "adam": lambda: rangerlab.Adam(params, lr=lr, gc=gc),
        "radam": lambda: rangerlab.RAdam(params, lr=lr, gc=gc),
        "ranger": lambda: rangerlab.Ranger(params, lr=lr, gc=gc),
        "momentum": lambda: rangerlab.SGD(params, lr=lr, momentum=0.9, gc=gc),
    }
    if name not in builders:
        raise ValueError(f"no GC variant of {name!r}; known: {', '.join(builders)}")
    return builders[name]()
