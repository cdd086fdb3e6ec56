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
    ``optimizer.step()``, the optimizer did not skip it itself (rangerlab's
    ``skip_nonfinite=True`` and `rangerlab.Lookahead` set ``last_step_skipped``) and the scaler
    found no inf/NaN (an optimizer that takes ``found_inf`` itself, as rangerlab's and torch's
    fused ones do, is called and skips on the device; the scaler then lowers its scale, which is
    how this helper knows).

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
    scale = scaler.get_scale()
    try:
        scaler.step(optimizer, **step_kwargs)
    finally:
        handle.remove()
    scaler.update()
    found_inf = scaler.get_scale() < scale  # update() lowers the scale only after inf/NaN
    taken = bool(called) and not found_inf and not getattr(optimizer, "last_step_skipped", False)
    if taken and scheduler is not None:
        scheduler.step()
    return taken
