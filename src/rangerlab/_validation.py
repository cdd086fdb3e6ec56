"""Checks for hyperparameters, one rule per group key.

Every optimizer validates each param group (at construction and in ``add_param_group``) through
``check_group``, so a rule lives in exactly one place and the error always names the argument
and the value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch


def _number(name: str, value: Any) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"Invalid {name}: {value!r} (expected a number or a 1-element tensor)")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"Invalid {name}: {value!r} (expected a number)")
    if math.isnan(value):
        raise ValueError(f"Invalid {name}: {value!r} (must not be NaN)")
    return float(value)


def _non_negative(name: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if _number(name, value) < 0:
            raise ValueError(f"Invalid {name}: {value!r} (must be >= 0)")

    return check


def _positive(name: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if _number(name, value) <= 0:
            raise ValueError(f"Invalid {name}: {value!r} (must be > 0)")

    return check


def _betas(value: Any) -> None:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"Invalid betas: {value!r} (expected a pair (beta1, beta2))")
    for i, beta in enumerate(value):
        try:
            valid = 0.0 <= _number(f"betas[{i}]", beta) < 1.0
        except ValueError:
            valid = False
        if not valid:
            raise ValueError(f"Invalid betas[{i}]: {beta!r} in betas={value!r} (must be in [0, 1))")


def _k(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Invalid k: {value!r} (must be a positive int)")


def _alpha(value: Any) -> None:
    if not 0.0 < _number("alpha", value) <= 1.0:
        raise ValueError(f"Invalid alpha: {value!r} (must be in (0, 1])")


def _dampening(value: Any) -> None:
    if not 0.0 <= _number("dampening", value) <= 1.0:
        raise ValueError(f"Invalid dampening: {value!r} (must be in [0, 1])")


def _max_weight_norm(value: Any) -> None:
    if value is not None and _number("max_weight_norm", value) <= 0:
        raise ValueError(f"Invalid max_weight_norm: {value!r} (must be > 0 or None)")


def _flag(name: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if not isinstance(value, bool):
            raise ValueError(f"Invalid {name}: {value!r} (expected True or False)")

    return check


def _optional_flag(name: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"Invalid {name}: {value!r} (expected None, True or False)")

    return check


def _telemetry(value: Any) -> None:
    if not isinstance(value, (bool, int)) or value < 0:
        raise ValueError(f"Invalid telemetry: {value!r} (expected True, False or a positive int)")


RULES: dict[str, Callable[[Any], None]] = {
    "lr": _non_negative("lr"),
    "betas": _betas,
    "eps": _non_negative("eps"),
    "weight_decay": _non_negative("weight_decay"),
    "momentum": _non_negative("momentum"),
    "dampening": _dampening,
    "trust_coefficient": _positive("trust_coefficient"),
    "max_weight_norm": _max_weight_norm,
    "k": _k,
    "alpha": _alpha,
    "nesterov": _flag("nesterov"),
    "clip": _flag("clip"),
    "gc": _flag("gc"),
    "trust_ratio": _flag("trust_ratio"),
    "decoupled_weight_decay": _flag("decoupled_weight_decay"),
    "master_weights": _flag("master_weights"),
    "skip_nonfinite": _flag("skip_nonfinite"),
    "foreach": _optional_flag("foreach"),
    "fused": _optional_flag("fused"),
    "telemetry": _telemetry,
}


def unique_params(group: Mapping[str, Any], index: int) -> list:
    """The group's ``params`` as a list, or ``ValueError`` naming a tensor that appears twice.

    torch only warns about duplicates and then updates such a tensor twice per step.
    """
    params = group["params"]
    if isinstance(params, torch.Tensor):
        return [params]
    if isinstance(params, (set, frozenset)):
        return params  # torch refuses sets with its own message (their order is undefined)
    params = list(params)
    first: dict[int, int] = {}
    for position, p in enumerate(params):
        earlier = first.setdefault(id(p), position)
        if earlier != position:
            raise ValueError(
                f"Invalid params: parameter group {index} holds the same tensor at positions "
                f"{earlier} and {position} (duplicate parameters; pass each tensor once)"
            )
    return params


def check_group(group: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the first invalid hyperparameter of ``group``."""
    for name, value in group.items():
        rule = RULES.get(name)
        if rule is not None:
            rule(value)
    if group.get("fused") and group.get("foreach"):
        raise ValueError("Invalid fused: True with foreach=True (pick one fast path, as in torch)")
    if group.get("nesterov"):
        momentum = _number("momentum", group.get("momentum", 0.0))
        dampening = _number("dampening", group.get("dampening", 0.0))
        if momentum <= 0 or dampening != 0:
            raise ValueError(
                f"Invalid nesterov: True with momentum={group.get('momentum')!r} and "
                f"dampening={group.get('dampening', 0.0)!r} (Nesterov momentum needs momentum > 0 "
                "and dampening = 0)"
            )
