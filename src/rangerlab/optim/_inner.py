"""Stepping a wrapped optimizer as a part of its wrapper's step (for `Lookahead`).

torch runs the global step hooks (``register_optimizer_step_pre_hook``/``post_hook``) around
every ``Optimizer.step``. A wrapper that calls its wrapped optimizer's ``step`` would fire them
twice per user-visible step, so the wrapped step runs here without them; the wrapped optimizer's
own hooks still run, in torch's order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.optim import Optimizer


def step_inner(optimizer: Optimizer, closure: Callable[[], Any] | None) -> Any:
    """``optimizer.step(closure)`` with its own step hooks but without torch's global ones."""
    hooked = type(optimizer).step
    plain = getattr(hooked, "__wrapped__", None) if getattr(hooked, "hooked", False) else None
    if plain is None or "step" in vars(optimizer):
        # Not torch's hook wrapper, or a step patched on the instance (an LR scheduler built on
        # the wrapped optimizer counts calls that way): call it as it is.
        return optimizer.step() if closure is None else optimizer.step(closure)
    args: tuple = (optimizer,) if closure is None else (optimizer, closure)
    kwargs: dict = {}
    for hook in list(optimizer._optimizer_step_pre_hooks.values()):
        result = hook(optimizer, args, kwargs)
        if result is not None:
            args, kwargs = result
    out = plain(*args, **kwargs)
    optimizer._optimizer_step_code()
    for hook in list(optimizer._optimizer_step_post_hooks.values()):
        hook(optimizer, args, kwargs)
    return out
