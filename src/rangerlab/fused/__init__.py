"""The fused fast path: each optimizer step in one or two passes over memory (CPU).

Design note. An optimizer step is memory-bound: it must read the gradients, weights and state and
write the weights and state back, and the reference path (one ``torch._foreach_*`` call per
operation) makes about ten such passes. The options weighed:

* ``torch.compile`` of the list kernels: fuses well, but compiles one graph per list of shapes
  (minutes for 2,000 tensors, again for every new model), recompiles on new Python scalars, and
  its CPU backend fails on kernels that mix a per-row mean (GC) with in-place updates of the same
  tensors (``KeyError: 'bufN'``, seen with torch 2.13).
* torch's own fused Adam with adjusted arguments (RAdam's rectified phase is Adam with
  ``lr*r_t`` and ``eps/sqrt(1-beta2^t)``): one pass, but GC, the LAMB/LARS norms and the
  Lookahead sync would each add passes, and RAdam's first steps need another kernel anyway.
* a small C++ kernel per family (``kernels.h`` and its ``.cpp`` files, ATen only, built once with
  ``torch.utils.cpp_extension`` and cached on disk): one pass for Adam/RAdam/Ranger (GC's mean of
  the next row is taken in the loop that updates this one, the Lookahead sync rides along on sync
  steps), two for
  LARS and Ranger-LARS (the trust ratio needs whole-tensor norms before the update). Parallel
  over row-aligned chunks of all tensors at once, so 2,000 small tensors cost one dispatch.

We use the C++ kernels. The build (about 30 s measured on 2 cores, see the README; announced once
on stderr) happens at the first fused step, or ahead of time with ``python -m rangerlab.fused``,
and is reused by every later process (`._build`: the cache key, the lock);
`_build.build_seconds` reports it. The kernels follow the reference transforms operation by
operation, so the two paths agree to rounding and keep the same state keys (a checkpoint moves
between them).

On CUDA the same chains run as Triton kernels (`triton_kernels`, host side in
`triton_plan`): one pass for Adam/AdamW, RAdam and Ranger, two for LARS, LARC, LAMB and
Ranger-LARS, one launch per pass per bucket, no host synchronisation (GradScaler's
``grad_scale``/``found_inf`` are handled on the device). triton is imported only then.

When it runs: for a bucket whose group has ``fused=True``, or ``fused=None`` with ``foreach=None``
(an explicit ``foreach`` asks for the reference path, as in torch), if the group's chain has a
kernel (`kernel_for`) and the tensors are contiguous plain tensors: float32/float64 on the
CPU (bf16/fp16 weights arrive as float32 working copies; their gradients are converted), or
float32/bf16/fp16 on CUDA. ``fused=True`` raises a clear error where that does not hold;
``fused=None`` quietly takes the reference path, also when the kernels cannot be built (no C++
compiler) or triton is missing, after one warning.

FSDP2: parameters that are ``Shard(0)`` DTensors run the same kernels on their local shards
(`rangerlab.fused.sharded`), with the trust ratios' norms summed over the ranks once per bucket.

Testing without a GPU: with the environment variable ``RANGERLAB_TRITON_ON_CPU=1`` (private, for
the test suite) CPU buckets take the Triton path, which then runs under ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .._ops import _PLAIN_TYPES
from .._warnings import warn
from . import _build, sharded
from .amp import NO_CONTROL, StepControl, nonfinite_flag
from .plans import FusedKernel, kernel_for
from .stats import STATS_COLUMNS, new_stats

__all__ = [
    "FusedKernel",
    "NO_CONTROL",
    "STATS_COLUMNS",
    "StepControl",
    "advance_steps",
    "available",
    "build_seconds",
    "kernel_for",
    "new_stats",
    "nonfinite_on_device",
    "select",
    "triton_available",
]

_LOW = (torch.bfloat16, torch.float16)
_CPU_DTYPES = (torch.float32, torch.float64, *_LOW)
_TRITON_DTYPES = (torch.float32, *_LOW)
_build_error: Exception | None = None
_triton_error: Exception | None = None


def _triton_on_cpu() -> bool:
    return os.environ.get("RANGERLAB_TRITON_ON_CPU") == "1"


def triton_available() -> bool:
    """True when triton can be imported (the fused CUDA step needs it)."""
    global _triton_error
    if _triton_error is not None:
        return False
    try:
        from . import triton_plan  # noqa: F401
    except Exception as error:  # an absent or broken triton surfaces as many error types
        _triton_error = error
        return False
    return True


def available() -> bool:
    """True when the C++ kernels are built (building them now if needed) and loaded."""
    global _build_error
    if _build_error is not None:
        return False
    try:
        _build.load()
    except Exception as error:  # a missing compiler or ninja surfaces as many error types
        _build_error = error
        warn(
            f"rangerlab: the fused kernels could not be built ({error}); using the reference path",
            RuntimeWarning,
        )
        return False
    return True


def advance_steps(counters: list[Tensor]) -> list[int]:
    """Add 1 to each step counter in place; return the new counts (``int(t)`` of each).

    ``t <- t + 1`` for every counter, as ``torch._foreach_add_(counters, 1)`` does. Once the
    C++ kernels are loaded and the counters are torch.optim's kind (plain one-element float32
    or float64 CPU tensors), one call into them does it (``_foreach_add_`` on the CPU adds tensor
    by tensor, about 4 us each: 0.23 ms of every step of ResNet-18's 62 tensors); otherwise
    torch's ``_foreach_add_``.

    >>> counters = [torch.zeros(()), torch.tensor(4.0)]
    >>> advance_steps(counters), [float(t) for t in counters]
    ([1, 5], [1.0, 5.0])
    """
    ops = _build.loaded()
    if ops is not None and all(type(c) is Tensor for c in counters):  # no subclass (DTensor)
        counts = ops.advance_steps(counters)
        if len(counts) == len(counters):
            return counts
    torch._foreach_add_(counters, 1.0)
    return [int(t) for t in counters]


def build_seconds() -> float:
    """Seconds this process spent compiling the kernels (0 if a cached build was loaded)."""
    return _build.build_seconds


def _uses_triton(weights: Sequence[Tensor]) -> bool:
    return weights[0].device.type == "cuda" or _triton_on_cpu()


#: The oldest GPUs (compute capability) the Triton kernels are built for.
MIN_CAPABILITY = (7, 5)


def _unsupported(weights: Sequence[Tensor]) -> str | None:
    # A bucket shares one device and dtype, so the first tensor speaks for them all.
    first = weights[0]
    if first.device.type not in ("cpu", "cuda"):
        return f"device {first.device} (the fused kernels run on CPU and CUDA)"
    if first.device.type == "cuda" and torch.cuda.get_device_capability(first.device) < (
        MIN_CAPABILITY
    ):
        return f"a GPU of compute capability below {MIN_CAPABILITY}"
    dtypes = _TRITON_DTYPES if _uses_triton(weights) else _CPU_DTYPES
    if first.dtype not in dtypes:
        return f"dtype {first.dtype} on {first.device.type}"
    if sharded.row_sharded(list(weights)):
        weights = sharded.local_tensors(list(weights))
    if not all(type(w) in _PLAIN_TYPES for w in weights):
        return "tensor subclasses (other than FSDP2's Shard(0) DTensors)"
    if not all(w.is_contiguous() for w in weights):
        return "non-contiguous tensors"
    return None


def nonfinite_on_device(work: Sequence[tuple[dict, Sequence[Tensor]]]) -> Tensor | None:
    """skip_nonfinite's check as a device flag, when every parameter it covers is a plain CUDA
    tensor of a group that takes the Triton path; None: the host must check (as before)."""
    grads = [
        p.grad for group, params in work if group["skip_nonfinite"] for p in params if p.numel()
    ]
    if not grads or not triton_available():
        return None
    devices = {g.device for g in grads}
    if len(devices) != 1 or not _uses_triton(grads):
        return None
    if any(type(g) not in _PLAIN_TYPES for g in grads):
        return None
    if any(g["fused"] is False or (g["fused"] is None and g["foreach"] is not None)
           for g, _ in work):  # fmt: skip
        return None
    return nonfinite_flag(grads)


def select(group: dict[str, Any], transforms: Sequence, weights: Sequence[Tensor]):
    """The kernel to run a bucket with, or None for the reference path (see the module note).

    Returns a `FusedKernel` (the CPU kernels) or a ``TritonStep`` (CUDA), which counts
    steps on the device (its ``device_steps`` is true) and takes GradScaler's tensors.

    Raises:
        ValueError: ``fused=True`` and the chain has no kernel or the tensors do not fit one.
        RuntimeError: ``fused=True`` and the kernels cannot be built or triton is missing.
    """
    fused = group["fused"]
    if fused is False or (fused is None and group["foreach"] is not None):
        return None
    kernel = kernel_for(transforms)
    if kernel is None:
        if fused:
            raise ValueError(
                f"fused=True: no fused kernel for the chain {list(transforms)}; use fused=None"
            )
        return None
    reason = _unsupported(weights)
    if reason is not None:
        if fused:
            raise ValueError(f"fused=True: the fused kernels do not take {reason}")
        return None
    if sharded.row_sharded(list(weights)):
        step = select(group, transforms, sharded.local_tensors(list(weights)))
        return None if step is None else sharded.ShardedStep(step)
    if _uses_triton(weights):
        if not triton_available():
            if fused:
                raise RuntimeError(
                    f"fused=True: the CUDA kernels need triton, which failed to import "
                    f"({_triton_error})"
                )
            return None
        from .triton_plan import TritonStep

        return TritonStep(kernel)
    if fused:
        _build.load()
        return kernel
    return kernel if available() else None
