"""What a step is told by GradScaler (``grad_scale``, ``found_inf``), for the fused paths."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class StepControl:
    """GradScaler's per-step tensors, as it sets them on an optimizer whose
    ``_step_supports_amp_scaling`` is true (and deletes them after ``step()``).

    Attributes:
        grad_scale: the gradients are to be divided by it (None: already unscaled).
        found_inf: nonzero when a gradient holds inf or NaN: the step must change nothing
            (weights, state, counters). None: nothing was checked.
    """

    grad_scale: Tensor | None = None
    found_inf: Tensor | None = None

    def with_nonfinite(self, flag: Tensor) -> StepControl:
        """This control, also skipping where ``flag`` (a device-side non-finite check) is set."""
        flag = flag.reshape(1).to(torch.float32)
        found_inf = flag if self.found_inf is None else (self.found_inf + flag).clamp_(max=1.0)
        return StepControl(self.grad_scale, found_inf)


def nonfinite_flag(grads: list[Tensor]) -> Tensor:
    """1 where any of ``grads`` (one device) holds inf or NaN, else 0: computed on the device.

    One ``_foreach_norm(ord=inf)`` over the bucket: a tensor's largest magnitude is finite exactly
    when all its values are.
    """
    norms = torch._foreach_norm(grads, ord=float("inf"))
    return (~torch.stack(norms).isfinite().all()).to(torch.float32)


NO_CONTROL = StepControl()
