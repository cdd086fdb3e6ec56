"""The telemetry columns that the fused kernels fill in their own passes (see rangerlab.telemetry).

A recording fused step gets a float64 ``(n, 9)`` tensor, one row per tensor of the bucket, zeroed
by `new_stats`, and fills it while it updates the weights (the updates themselves are bit-identical
to a step without it). The columns:

| column | what the kernel puts there |
|---|---|
| ``w_sq`` | ``sum(w^2)`` of the weights before the step (working precision) |
| ``g_sq`` | ``sum(g^2)`` of the gradient received (after unscaling, before GC and decay) |
| ``u_sq`` | ``sum(u^2)`` of the final direction the step applies as ``w -= lr * u`` |
| ``q_n``, ``q_mean``, ``q_m2`` | count, mean, sum of squared deviations of ``q`` (below) |
| ``gc_sq`` | ``sum(row_len * row_mean^2)`` over Gradient Centralization's rows (0 without GC) |
| ``dist_sq`` | ``sum((w_fast - slow)^2)`` just before a Lookahead sync (0 without one) |
| ``ratio`` | the trust ratio applied (1 where the chain has none) |

``q = 1 / (sqrt(v) / d + eps)`` is the adaptive factor of the Adam family's direction
``a * m * q`` (its count is 0 where a step was not adaptive, RAdam's first steps). The C++
kernels compute the direction as that product, so the factor they sum is the one they apply.
"""

from __future__ import annotations

import torch
from torch import Tensor

STATS_COLUMNS = ("w_sq", "g_sq", "u_sq", "q_n", "q_mean", "q_m2", "gc_sq", "dist_sq", "ratio")
W_SQ, G_SQ, U_SQ, Q_N, Q_MEAN, Q_M2, GC_SQ, DIST_SQ, RATIO = range(len(STATS_COLUMNS))


# One blank per (n, device), cloned for each recorded step: a clone is one operation, the
# zeros and the ratio column's fill were two (each a few microseconds on the CPU, every step).
_BLANKS: dict[tuple[int, torch.device], Tensor] = {}


def new_stats(n: int, device: torch.device | str = "cpu") -> Tensor:
    """A zeroed ``(n, 9)`` float64 stats tensor whose ``ratio`` column is 1 (a new tensor).

    >>> new_stats(2)[:, RATIO].tolist(), new_stats(2)[:, :RATIO].abs().sum().item()
    ([1.0, 1.0], 0.0)
    """
    key = (n, torch.device(device))
    blank = _BLANKS.get(key)
    if blank is None:
        if len(_BLANKS) > 64:  # bounded: a model rebuilt with other buckets leaves old keys
            _BLANKS.clear()
        blank = torch.zeros((n, len(STATS_COLUMNS)), dtype=torch.float64, device=key[1])
        blank[:, RATIO] = 1.0
        _BLANKS[key] = blank
    return blank.clone()
