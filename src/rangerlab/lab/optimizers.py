"""The optimizers the lab compares, built through the library's one registry.

Every arm is a registry name (``rangerlab.list_optimizers()``) plus the settings the lab fixes;
nothing here re-implements an optimizer. The Adam family runs with ``beta2 = 0.99`` (Ranger keeps
its own ``beta1 = 0.95``): RAdam's rectifier then passes 0.9 by step ~300 and 0.98 by step ~500,
so runs of a few hundred steps compare the methods after their built-in warmup, not during it
(with the usual 0.999 that takes ~3,000 steps, more than 2 cores allow for every arm).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

import rangerlab

BETA2 = 0.99

#: arm -> (registry name, fixed settings, label).
ARMS: dict[str, tuple[str, dict[str, Any], str]] = {
    "sgd": ("sgd", {"momentum": 0.9}, "SGD+momentum"),
    "adam": ("adam", {"betas": (0.9, BETA2)}, "Adam"),
    "adam_gc": ("adam", {"betas": (0.9, BETA2), "gc": True}, "Adam+GC"),
    "radam": ("radam", {"betas": (0.9, BETA2)}, "RAdam"),
    "lookahead_adam": (
        "adam",
        {"betas": (0.9, BETA2), "lookahead": True, "k": 6, "alpha": 0.5},
        "Lookahead(Adam)",
    ),
    "ranger": ("ranger", {"betas": (0.95, BETA2)}, "Ranger"),
    "lars": ("lars", {"momentum": 0.9}, "LARS"),
    "ranger_lars": ("ranger_lars", {"betas": (0.95, BETA2)}, "Ranger-LARS"),
}

#: The centre of each arm's learning-rate grid (a conventional rate for small networks); every
#: arm's grid has the same number of points at the same half-decade spacing around it, and the
#: runner extends a grid whose best rate is at an end (see ``protocol.Tuning``).
CENTRE: dict[str, float] = {
    "sgd": 0.1,
    "adam": 1e-2,
    "adam_gc": 1e-2,
    "radam": 1e-2,
    "lookahead_adam": 1e-2,
    "ranger": 1e-2,
    "lars": 3.0,
    "ranger_lars": 1e-2,
}

_unknown = {name for name, _, _ in ARMS.values()} - set(rangerlab.list_optimizers())
if _unknown:  # the registry is the one vocabulary; fail at import if it drifts
    raise ImportError(f"lab arms name optimizers the registry lacks: {sorted(_unknown)}")


def label(arm: str) -> str:
    """The human-readable name of ``arm`` (an :data:`ARMS` key)."""
    return ARMS[arm][2]


def labels(*arms: str) -> dict[str, str]:
    """``{arm: label}`` for the given arms."""
    return {a: label(a) for a in arms}


def build(
    arm: str, model: nn.Module | Iterable, lr: float, **overrides: Any
) -> torch.optim.Optimizer:
    """Optimizer ``arm`` over ``model`` (or parameters / param groups) at rate ``lr``, via
    :func:`rangerlab.create_optimizer` (which, given a model, gives biases and 1-D weights no
    weight decay and, for the layer-wise optimizers, no trust ratio)."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; known: {', '.join(ARMS)}")
    name, fixed, _ = ARMS[arm]
    return rangerlab.create_optimizer(model, name, lr=lr, **{**fixed, **overrides})


def grid(arm: str, points: int) -> list[float]:
    """``points`` rates at half-decade steps centred on ``CENTRE[arm]`` (the same shape for every
    arm: one tuning budget)."""
    first = -(points - 1) / 2
    return [CENTRE[arm] * 10 ** (0.5 * (first + i)) for i in range(points)]


def half_decades(low: float, points: int) -> list[float]:
    """``points`` rates from ``low`` upward at half-decade steps (rounded to 3 digits)."""
    return [float(f"{low * 10 ** (0.5 * i):.3g}") for i in range(points)]


def log_spread(values: list[float]) -> float:
    """log10(max / min) of positive values: their spread in decades."""
    return math.log10(max(values) / min(values))
