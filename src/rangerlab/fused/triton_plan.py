"""The Triton path's host side: tables, per-step scalars on the device, and the launches.

For one bucket and one step: the step counters (float32 tensors on the weights' device, as
torch's fused Adam keeps them) are advanced on the device; the per-step scalars come from the
transforms' rules applied to a tensor of those counters (`FusedKernel.scalars`), so nothing
is read back to the host; then one launch per pass covers the whole bucket. Under GradScaler a
set ``found_inf`` masks the kernels off and the counters are taken back on the device.

Tables: per-tensor sizes and the task list depend only on the shapes (and the GC and
first-momentum-step flags) and are cached; the pointer table is rebuilt when a tensor moves (new
gradients each step do), and reaches a GPU by a pinned, non-blocking copy (no synchronisation).

Telemetry: given a ``stats`` tensor (`rangerlab.fused.stats`), the same passes run as the
kernels' ``*_stats_kernel`` variants, which also write per-task partials; one more launch
(`triton_kernels.segment_stats`) combines them per tensor into ``stats``, and the trust ratios
are copied into its ``ratio`` column on the device. Nothing is read back to the host.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import triton.language as tl
from torch import Tensor

from ..transforms.momentum import first_step
from . import triton_kernels as tk
from .amp import StepControl
from .plans import FusedKernel, NormReducer
from .stats import RATIO, STATS_COLUMNS

ROWS, COLS = 16, 64  # a program's tile: ROWS rows of COLS columns
#: Elements per program (whole rows): about torch's multi-tensor chunk.
CHUNK = 1 << 16

_TL_TYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}
_CACHE: OrderedDict[tuple, Any] = OrderedDict()
_CACHE_SIZE = 64


def _cached(key: tuple, build):
    value = _CACHE.get(key)
    if value is None:
        value = _CACHE[key] = build()
        if len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    return value


def _to_device(values: Tensor, device: torch.device) -> Tensor:
    if device.type != "cuda":
        return values
    # A pinned source lets the copy run asynchronously; the caching host allocator keeps the
    # buffer alive until the copy is done.
    return values.pin_memory().to(device, non_blocking=True)


def _layout(shapes: tuple, gc: tuple, fresh: tuple, chunk: int, device: torch.device):
    """info (n, 4), tasks (T, 3), task bounds per tensor (n + 1,): see triton_kernels."""
    info, tasks, bounds = [], [], [0]
    for i, (shape, on, new) in enumerate(zip(shapes, gc, fresh)):
        numel = 1
        for size in shape:
            numel *= size
        row = numel // shape[0] if on else COLS
        rows = -(-numel // row) if numel else 0
        per_task = max(1, chunk // row)
        for first in range(0, rows, per_task):
            tasks.append((i, first, min(per_task, rows - first)))
        bounds.append(len(tasks))
        info.append((numel, row, int(on), int(new)))
    as_table = lambda rows, width: torch.tensor(rows or [[0] * width], dtype=torch.int64)  # noqa: E731
    return (
        _to_device(as_table(info, 4), device),
        _to_device(as_table(tasks, 3), device),
        _to_device(torch.tensor(bounds, dtype=torch.int64), device),
        len(tasks),
    )


def _pointers(lists: Sequence[Sequence[Tensor]], device: torch.device) -> Tensor:
    key = ("ptrs", device, *(t.data_ptr() for column in lists for t in column))
    return _cached(
        key,
        lambda: _to_device(
            torch.tensor([[t.data_ptr() for t in column] for column in lists], dtype=torch.int64),
            device,
        ),
    )


def _step_counters(states: list[dict[str, Any]], device: torch.device) -> Tensor:
    """The bucket's step counters as one float32 vector on ``device``, advanced in one launch.

    Each ``state["step"]`` is a 0-d view into it (the same value and layout as torch's counters,
    so checkpoints are unchanged). Counters that are not such views yet (a first step, a loaded
    checkpoint, another bucket's order) are gathered into a new vector once.
    """
    first = states[0]["step"]
    base = first._base
    n = len(states)
    if not (
        base is not None
        and base.device == device
        and base.shape == (n,)
        and all(
            s["step"]._base is base and s["step"].storage_offset() == i
            for i, s in enumerate(states)
        )  # fmt: skip
    ):
        base = torch.stack([s["step"].to(device=device, dtype=torch.float32) for s in states])
        for i, s in enumerate(states):
            s["step"] = base[i]
    return base


#: Longest table of per-step scalars: 2^20 steps (12 MB).
TABLE_CAP = 1 << 20


def settled_at(kernel: FusedKernel, beta1: float, beta2: float) -> int | None:
    """The first step from which the kernel's per-step scalars are their limits (a = d = 1,
    adaptive) in float32, by bisection on the owners' rule; None if not by `TABLE_CAP`."""

    def settled(t: int) -> bool:
        a, d, adaptive = kernel.scalars(t, beta1, beta2)
        return bool(adaptive) and abs(a - 1.0) <= 2.0**-25 and abs(d - 1.0) <= 2.0**-25

    low, high = 1, TABLE_CAP
    if not settled(high):
        return None
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if settled(mid) else (mid + 1, high)
    return low


def scalar_table(kernel: FusedKernel, beta1: float, beta2: float, device) -> Tensor | None:
    """float32 ``(T, 3)``: ``a``, ``d``, adaptive at steps 1..T, from the transforms' rule on a
    tensor of steps; T is where they settle, so a later step reads row T (its exact float32
    values). None where they do not settle by `TABLE_CAP` steps.

    A step's scalars are then one gather on the device instead of some twenty small launches.
    """
    settled = settled_at(kernel, beta1, beta2)
    if settled is None:
        return None
    steps = torch.arange(1, settled + 1, dtype=torch.float64)
    a, d, adaptive = kernel.scalars(steps.to(device), beta1, beta2)
    table = torch.empty((len(steps), 3), dtype=torch.float32, device=device)
    table[:, 0] = a
    table[:, 1] = d
    table[:, 2] = adaptive
    return table


def _full(value, device: torch.device) -> Tensor:
    """A 0-d float32 tensor on ``device`` from a number or tensor, without a host round trip."""
    if isinstance(value, Tensor):
        return value.to(device=device, dtype=torch.float32).reshape(())
    return torch.full((), float(value), dtype=torch.float32, device=device)


class TritonStep:
    """Runs ``kernel``'s algorithm on a bucket with the Triton kernels (see the module note)."""

    device_steps = True  # the step counters are advanced here, on the device
    direct_low_precision = True  # bf16/fp16 weights are read and written as they are
    records = True  # fills a telemetry ``stats`` tensor within its passes

    def __init__(self, kernel: FusedKernel):
        self.kernel = kernel

    def __repr__(self) -> str:
        return f"TritonStep({self.kernel})"

    def __getattr__(self, name: str):
        return getattr(self.kernel, name)

    def __call__(
        self,
        group: dict[str, Any],
        weights: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
        control: StepControl,
        reduce_norms: NormReducer | None = None,
        stats: Tensor | None = None,
    ) -> None:
        """Update ``weights`` and the state in place, as the chain would, for one step.

        Args:
            group: the param group.
            weights, grads, states: the bucket's tensors (one device and dtype) and their state.
            control: GradScaler's ``grad_scale`` and ``found_inf`` (tensors on the device).
            reduce_norms: sums the trust ratios' squared norms over ranks (FSDP2), in place.
            stats: None, or a float64 ``(len(weights), 9)`` tensor on the weights' device made by
                `rangerlab.fused.stats.new_stats`, filled with the step's telemetry (columns in
                `rangerlab.fused.stats`), computed in fp32 in the same passes, without a host
                synchronisation. The weights and state are updated exactly as without it. On a
                step that GradScaler skips its contents are meaningless (the caller drops them).
        """
        k, device = self.kernel, weights[0].device
        if stats is not None and (
            stats.shape != (len(weights), len(STATS_COLUMNS))
            or stats.dtype != torch.float64
            or stats.device != device
        ):
            raise ValueError(
                f"stats must be float64 of shape ({len(weights)}, {len(STATS_COLUMNS)}) on "
                f"{device}, got {stats.dtype} {tuple(stats.shape)} on {stats.device}"
            )
        found_inf = control.found_inf
        fresh = [False] * len(weights)
        if k.family == "sgd" and k.momentum and float(group["momentum"]) != 0:
            fresh = [first_step(s) for s in states]
            # A momentum buffer's first step writes it whole (v = d); a skipped first step must
            # leave no buffer, which only the host can decide: one read of found_inf, once.
            if any(fresh) and found_inf is not None and bool(found_inf.item()):
                return
            for w, s, new in zip(weights, states, fresh):
                if new:
                    s["momentum_buffer"] = torch.empty_like(w, dtype=torch.float32)
            if found_inf is not None and any(fresh):
                found_inf = None  # known to be clear
        steps = _step_counters(states, device)
        steps.add_(1.0)
        gc = k.gc(group)
        shapes = tuple(tuple(w.shape) if w.dim() else (1,) for w in weights)
        gc_flags = tuple(gc and w.dim() > 1 for w in weights)
        info, tasks, bounds, count = _cached(
            ("layout", device, shapes, gc_flags, tuple(fresh), CHUNK),
            lambda: _layout(shapes, gc_flags, tuple(fresh), CHUNK, device),
        )
        if count:
            ctl = torch.stack(
                [
                    _full(k.sync(group), device),
                    _full(0.0 if found_inf is None else found_inf, device),
                    _full(1.0 if control.grad_scale is None else control.grad_scale, device),
                ]
            )
            if found_inf is not None:
                ctl[0] = ctl[0] * (1.0 - ctl[1])
            common = dict(
                W_DTYPE=_TL_TYPES[weights[0].dtype],
                G_DTYPE=_TL_TYPES[grads[0].dtype],
                GC=gc,
                ROWS=ROWS,
                COLS=COLS,
            )
            run = self._adam if k.family == "adam" else self._sgd
            parts = None
            if stats is not None:  # every column written by one of the step's passes
                parts = torch.empty((count, RATIO), dtype=torch.float32, device=device)
            ratios = run(group, weights, grads, states, steps, info, tasks, bounds, count, ctl,
                         common, reduce_norms, parts)  # fmt: skip
            if stats is not None:
                self._stats(parts, bounds, stats)
                if ratios is not None:
                    stats[:, RATIO] = ratios
        if found_inf is not None:
            steps.sub_(found_inf.to(device=device, dtype=torch.float32).reshape(()))

    @staticmethod
    def _stats(parts: Tensor, bounds: Tensor, stats: Tensor) -> None:
        """Per tensor, the tasks' partials combined into ``stats`` (columns before ``ratio``)."""
        out = stats if stats.is_contiguous() else stats.contiguous()
        tk.segment_stats[(len(stats),)](parts, bounds, out)
        if out is not stats:
            stats.copy_(out)

    def _norms(self, group, partials, bounds, n, device, reduce_norms) -> Tensor:
        sq_norms = torch.empty((n, 2), dtype=torch.float32, device=device)
        tk.segment_sum[(n,)](partials, bounds, sq_norms)
        if reduce_norms is not None:
            reduce_norms(sq_norms)
        return self.kernel.ratios(group, sq_norms).to(torch.float32).contiguous()

    def _adam(self, group, weights, grads, states, step, info, tasks, bounds, count, ctl,
              common, reduce_norms, parts=None) -> Tensor | None:  # fmt: skip
        k, device, n = self.kernel, weights[0].device, len(weights)
        beta1, beta2 = group["betas"]
        table = _cached(
            ("scalars", device, k.radam, float(beta1), float(beta2)),
            lambda: scalar_table(k, float(beta1), float(beta2), device),
        )
        scal = torch.empty((n, 4), dtype=torch.float32, device=device)
        if table is not None:
            index = step.clamp(min=1.0, max=float(len(table))).to(torch.int64) - 1
            scal[:, :3] = table[index]
        else:  # betas so close to 1 that the scalars have not settled by TABLE_CAP steps
            a, d, adaptive = k.scalars(step.to(torch.float64), beta1, beta2)
            scal[:, 0], scal[:, 1], scal[:, 2] = a, d, adaptive
        scal[:, 3] = group["lr"]
        lookahead = k.lookahead
        lists = [weights, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]]
        if lookahead:
            lists.append([s["slow_param"] for s in states])
        ptrs = _pointers(lists, device)
        weight_decay = k.weight_decay(group)
        decoupled = k.decay == "decoupled"
        args = (
            float(beta1),
            float(beta2),
            float(group["eps"]),
            0.0 if decoupled else weight_decay,
            weight_decay if decoupled else 0.0,
            float(group["alpha"]) if lookahead else 0.0,
        )
        flags = dict(common, LOOKAHEAD=lookahead)
        kernel = tk.adam_kernel if parts is None else tk.adam_stats_kernel
        extra = () if parts is None else (parts,)  # the stats kernel's one more table
        if not k.uses_trust(group):
            kernel[(count,)](ptrs, n, info, tasks, scal, scal, scal, ctl, *extra, *args,
                             MODE=0, **flags)  # fmt: skip
            return None
        partials = torch.empty((count, 2), dtype=torch.float32, device=device)
        kernel[(count,)](ptrs, n, info, tasks, scal, scal, partials, ctl, *extra, *args,
                         MODE=1, **flags)  # fmt: skip
        ratios = self._norms(group, partials, bounds, n, device, reduce_norms)
        kernel[(count,)](ptrs, n, info, tasks, scal, ratios, partials, ctl, *extra, *args,
                         MODE=2, **flags)  # fmt: skip
        return ratios

    def _sgd(self, group, weights, grads, states, step, info, tasks, bounds, count, ctl,
             common, reduce_norms, parts=None) -> Tensor | None:  # fmt: skip
        k, device, n = self.kernel, weights[0].device, len(weights)
        momentum = float(group["momentum"]) if k.momentum else 0.0
        lists = [weights, grads]
        if momentum != 0:
            lists.append([s["momentum_buffer"] for s in states])
        ptrs = _pointers(lists, device)
        args = (
            float(group["lr"]),
            momentum,
            float(group["dampening"]) if momentum else 0.0,
            k.weight_decay(group),
        )
        flags = dict(
            common,
            MOMENTUM=momentum != 0,
            NESTEROV=bool(group["nesterov"]) if momentum else False,
            TRUST=k.uses_trust(group),
        )
        ratios = None
        partials = torch.empty((count, 2), dtype=torch.float32, device=device)
        if flags["TRUST"]:
            tk.sgd_kernel[(count,)](ptrs, n, info, tasks, ctl, partials, ctl, *args,
                                    MODE=1, **flags)  # fmt: skip
            ratios = self._norms(group, partials, bounds, n, device, reduce_norms)
        # the update pass; with telemetry, its variant that also writes the partials
        kernel = tk.sgd_kernel if parts is None else tk.sgd_stats_kernel
        extra = () if parts is None else (parts,)
        kernel[(count,)](ptrs, n, info, tasks, ctl if ratios is None else ratios, partials, ctl,
                         *extra, *args, MODE=0, **flags)  # fmt: skip
        return ratios
