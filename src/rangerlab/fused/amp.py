"""What a step is told by GradScaler (``grad_scale``, ``found_inf``), for the fused paths."""

from __future__ import annotations

from dataclasses import dataclass

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


NO_CONTROL = StepControl()
