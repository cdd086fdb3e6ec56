"""The three operations the per-step rules are written in, for Python numbers and for tensors.

Each algorithm's per-step scalars (bias corrections, RAdam's rectification, trust ratios) are
written once, beside its transform, in terms of `sqrt`, `where` and `minimum`
plus ordinary arithmetic. Called with Python numbers they give Python numbers (the reference path
and the CPU kernels); called with tensors (a step counter that lives on the GPU) they give tensors
computed on that device, so a CUDA step needs no host synchronisation.
"""

from __future__ import annotations

import math
from typing import TypeVar

import torch
from torch import Tensor

Number = TypeVar("Number", float, Tensor)


def sqrt(x: Number) -> Number:
    """Square root, element-wise for tensors."""
    return torch.sqrt(x) if isinstance(x, Tensor) else math.sqrt(x)


def where(condition, if_true, if_false):
    """``if_true`` where ``condition`` holds, else ``if_false`` (both are evaluated)."""
    if isinstance(condition, Tensor):
        return torch.where(condition, if_true, if_false)
    return if_true if condition else if_false


def minimum(x, cap):
    """The smaller of ``x`` and the number ``cap``, element-wise for tensors."""
    return torch.clamp(x, max=cap) if isinstance(x, Tensor) else min(x, cap)
