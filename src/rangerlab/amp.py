"""Mixed-precision helpers: know whether a step was taken, and keep schedulers in step with it.

``torch.amp.GradScaler.step`` silently skips ``optimizer.step()`` when the scaled gradients hold
inf or NaN (and then lowers the scale). An LR scheduler stepped unconditionally after it drifts
ahead of the optimizer by one step per skip. [`scaler_step`][rangerlab.amp.scaler_step] steps the
scheduler only when the optimizer really stepped, and tells the caller.
"""

from __future__ import annotations

from typing import Any

import torch


def scaler_step(
    scaler: torch.amp.GradScaler,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    **step_kwargs: Any,
) -> bool:
    """``scaler.step(optimizer)`` and ``scaler.update()``; then ``scheduler.step()`` if it stepped.

    Works with any ``torch.optim.Optimizer``. A step counts as taken when the scaler called
    ``optimizer.step()`` and the optimizer did not skip it itself (rangerlab's
    ``skip_nonfinite=True`` and `rangerlab.Lookahead` set ``last_step_skipped``; an
    optimizer that unscales inside its step skips exactly when the scale backs off).

    Args:
        scaler: the ``GradScaler`` the loss was scaled with.
        optimizer: the optimizer to step.
        scheduler: an LR scheduler to step only after a step that was taken.
        **step_kwargs: passed to ``scaler.step``.

    Returns:
        True if the parameters were updated, False if the step was skipped.

    Examples:
        A step that is taken moves the weights and the schedule; an overflow moves neither (the
        scaler halves its scale instead):

        >>> import torch
        >>> import rangerlab
        >>> w = torch.nn.Parameter(torch.tensor([1.0]))
        >>> opt = rangerlab.SGD([w], lr=0.1)
        >>> sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        >>> scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
        >>> scaler.scale(2 * w.sum()).backward()  # the unscaled gradient is 2
        >>> rangerlab.amp.scaler_step(scaler, opt, sched)
        True
        >>> w.detach(), sched.get_last_lr()
        (tensor([0.8000]), [0.05])
        >>> w.grad = torch.tensor([float("inf")])
        >>> rangerlab.amp.scaler_step(scaler, opt, sched)
        False
        >>> w.detach(), sched.get_last_lr(), scaler.get_scale()
        (tensor([0.8000]), [0.05], 2.0)
    """
    if not isinstance(scaler, torch.amp.GradScaler):
        raise TypeError(f"scaler must be a torch.amp.GradScaler, got {type(scaler).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    called: list[bool] = []
    handle = optimizer.register_step_post_hook(lambda *_: called.append(True))
    try:
        scaler.step(optimizer, **step_kwargs)
    finally:
        handle.remove()
    in_step = called and getattr(optimizer, "_step_supports_amp_scaling", False)
    scale = scaler.get_scale() if in_step and scaler.is_enabled() else None
    scaler.update()
    taken = bool(called) and not getattr(optimizer, "last_step_skipped", False)
    if scale is not None:
        # An optimizer that unscales inside its step (torch's fused ones) is always called and
        # skips on the device; the scale backs off exactly when inf/NaN was found.
        taken = taken and scaler.get_scale() >= scale
    if taken and scheduler is not None:
        scheduler.step()
    return taken
