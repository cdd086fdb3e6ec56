"""Per-layer telemetry from inside the optimizer step: ``Ranger(..., telemetry=True)``.

With ``telemetry=True`` on a param group, every step records, per parameter tensor, what the
step's own algorithm computes (each transform records its own quantities, so nothing is measured
twice or by a second copy of the maths). Read it with ``opt.telemetry()``: a plain
``dict[str, float]`` keyed ``"quantity/parameter name"`` (``"trust_ratio/layer1.0.conv1.weight"``),
each value the mean over the steps recorded since the last read (read every step for per-step
values; ``reset=False`` peeks without starting a new interval).

Quantities (all in the weights' working precision, float32 for bf16/fp16 weights):

| quantity | meaning |
|---|---|
| ``weight_norm`` | ``‖w‖`` before the step |
| ``grad_norm`` | ``‖g‖``, the gradient the step received (after GradScaler's unscale) |
| ``update_norm`` | ``lr ‖u‖``, the step's ``‖Δw‖`` (before any Lookahead sync) |
| ``update_ratio`` | ``update_norm / weight_norm`` (inf where ``‖w‖ = 0``) |
| ``trust_ratio`` | the layer-wise factor applied (LARS; LARC after clipping; LAMB, Ranger-LARS) |
| ``adaptive_lr_mean``, ``adaptive_lr_cv`` | mean, and std / mean, of the adaptive step (below) |
| ``rectifier``, ``adaptive`` | RAdam's ``r_t`` (on adaptive steps) and 1 / 0 for an adaptive step |
| ``gc_removed_norm`` | norm of the mean Gradient Centralization subtracted (dim > 1 only) |
| ``lookahead_distance`` | ``‖fast - slow‖`` just before each Lookahead sync |
| ``lr/group<i>`` | the learning rate of param group ``i`` at the step |
| ``skipped`` | 1 for a step skipped for non-finite gradients, else 0 |
| ``steps`` | optimizer steps in the interval (a count, not a mean) |
| ``recorded_steps`` | of those, the steps that recorded per-layer values |

``trust_ratio`` appears only in groups whose ``trust_ratio`` is on. The adaptive step is
Adam's ``1/(sqrt(v_hat) + eps)`` and RAdam's ``sqrt(1-beta2^t)/(sqrt(v) + eps)`` (on its
adaptive steps only); its std is the population std over the tensor.

Names: a group built from ``model.named_parameters()`` (torch keeps them as ``param_names``) or
by `rangerlab.create_optimizer` from a module names its tensors; `name_parameters`
names any other optimizer's; otherwise a tensor is ``group<i>.param<j>``.

Sampling: ``telemetry=N`` (a positive int) records the per-layer quantities on every ``N``-th
optimizer step only (``skipped``, ``lr`` and ``steps`` still count every step); ``True`` is every
step. The means are then over the sampled steps of the interval.

Cost: off (the default), the step does no extra work at all: the kernels run their variant
without the sums, the probes below are not in the chain and no transform records. On a recorded
step the fused kernels (C++ on the CPU, Triton on CUDA) compute every quantity in the passes they
make anyway (`rangerlab.fused.stats`: a few more sums over data already in cache), and the
weights they write are bit-identical to a step without telemetry, so recording never changes a
trajectory. On FSDP2's ``Shard(0)`` shards the fused step sums each rank's rows and one
asynchronous ``all_gather`` per recorded bucket combines them
(`rangerlab.fused.sharded.GatheredStats`: the step does not wait for it; the batch's turn into
quantities does), so every rank records the whole tensors' quantities. On the reference path
(``foreach=True/False``, chains without a kernel, other shardings) the probes and the
transforms add a few norm reductions per tensor instead; that path agrees with the fused one to
rounding.
``python -m rangerlab.bench`` shows the step times side by side.
Values stay on the device as tensors until they are read. The kernels' sums of a recorded step
are kept as they come (one small float64 tensor per bucket) and turned into the quantities for
up to `batch_limit` steps at once, at a read or when that many have gathered: a recorded step
adds almost no Python work, and a long interval holds at most that many steps' sums.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from ._ops import foreach_supported
from .fused import stats as columns
from .fused.sharded import GatheredStats, _dtensor_type
from .transforms.base import Context, Transform
from .transforms.radam import _rectifier


class Recorder:
    """Accumulates one optimizer's telemetry between reads (see the module docstring).

    Per-tensor values are summed as tensors, one running sum per bucket of names (a table of
    names by quantities), where they were computed (no host transfer until `read`); per-step
    numbers as Python floats.
    """

    def __init__(self) -> None:
        self.names: dict[int, str] = {}  # id(param) -> name, from name_parameters
        self.names_cache: dict[int, tuple[tuple, dict[int, str]]] = {}  # names_by_param's
        # (quantities, names) -> [sums (n, q), counts (n, q) or an int]: `add_table`'s buckets
        self._tables: dict[tuple[tuple[str, ...], tuple[str, ...]], list] = {}
        self._count_cache: dict[tuple, Tensor] = {}
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        # fused-kernel stats of recorded steps not yet turned into quantities (record_stats)
        self.pending: dict[_StatsLayout, list[_StatsStep]] = {}
        self.steps = 0  # optimizer steps in the interval
        self.seen = 0  # optimizer steps since the recorder was made: decides the sampled steps
        self.recorded = 0  # steps in the interval that recorded per-layer values

    def add(
        self,
        quantity: str,
        names: Sequence[str],
        values: Sequence[Tensor] | Tensor,
        mask: Tensor | None = None,
    ) -> None:
        """Record one value per named tensor; ``values`` are 0-d tensors (kept on the device).

        ``mask`` (a bool tensor, one entry per name) keeps only the values where it is true: a
        choice made on the device (RAdam's adaptive steps, a Lookahead sync) costs no sync here.
        """
        if not names:
            return
        if not isinstance(values, Tensor):
            values = torch.stack([_plain(v) for v in values])
        self.add_table(names, {quantity: _plain(values)}, {} if mask is None else {quantity: mask})

    def add_table(
        self,
        names: Sequence[str],
        cols: dict[str, Tensor | float | Sequence[float]],
        masks: dict[str, Sequence[bool] | Tensor],
    ) -> None:
        """Record a bucket's quantities at once: ``cols`` maps a quantity to one value per name
        (a tensor, a list, or a number for all); ``masks`` to the names it is recorded for (all
        where absent). One running sum per bucket, so a step costs a few tensor operations."""
        n = len(names)
        if not n:
            return
        device = next(c.device for c in cols.values() if isinstance(c, Tensor))
        f64 = torch.float64
        parts = []
        for col in cols.values():
            if isinstance(col, Tensor):
                parts.append(col.detach().reshape(-1).to(device, f64).expand(n))
            elif isinstance(col, int | float):
                parts.append(torch.full((n,), float(col), dtype=f64, device=device))
            else:
                parts.append(torch.tensor(col, dtype=f64, device=device))
        values = torch.stack(parts, dim=1)
        quantities, key_names = tuple(cols), tuple(names)
        counts = self._count_table(quantities, key_names, masks, device) if masks else None
        if counts is not None:
            values = torch.where(counts > 0, values, 0.0)
        self._accumulate((quantities, key_names), values, 1 if counts is None else counts)

    def _accumulate(self, key: tuple, values: Tensor, counts: Tensor | int) -> None:
        """Add a table of sums (names by quantities) and their counts to the running ones."""
        entry = self._tables.get(key)
        if entry is None:
            self._tables[key] = [values, counts.clone() if isinstance(counts, Tensor) else counts]
        else:
            entry[0] += values
            entry[1] = entry[1] + counts

    def flush(self, layout: _StatsLayout | None = None) -> None:
        """Turn the pending fused-kernel stats (of one bucket layout, or all) into quantities:
        the recorded steps of a bucket at once, in a few tensor operations."""
        for key in [layout] if layout is not None else list(self.pending):
            batch = self.pending.pop(key, None)
            if not batch:
                continue
            cols, masks = _stats_quantities(key, batch)
            quantities = tuple(cols)
            # each quantity summed over the steps, where its mask keeps it: (names, q)
            values = torch.stack(
                [
                    (cols[q] if q not in masks else torch.where(masks[q], cols[q], 0.0)).sum(0)
                    for q in quantities
                ],
                dim=-1,
            )
            if masks:
                k = len(batch)
                counts = torch.stack(
                    [
                        masks[q].sum(0, dtype=values.dtype)
                        if q in masks
                        else torch.full_like(values[:, 0], float(k))
                        for q in quantities
                    ],
                    dim=-1,
                )
                self._accumulate((quantities, key.names), values, counts)
            else:
                self._accumulate((quantities, key.names), values, len(batch))

    def _count_table(self, quantities, names, masks, device) -> Tensor:
        """1/0 per (name, quantity) from ``masks``; built once per pattern of host masks."""
        host = all(not isinstance(m, Tensor) for m in masks.values())
        key = (quantities, names, tuple((q, tuple(m)) for q, m in masks.items())) if host else None
        cached = self._count_cache.get(key) if host else None
        if cached is not None:
            return cached
        counts = torch.ones((len(names), len(quantities)), dtype=torch.float64, device=device)
        for q, mask in masks.items():
            if isinstance(mask, Tensor):
                counts[:, quantities.index(q)] = mask.to(device, torch.float64)
            else:
                counts[:, quantities.index(q)] = torch.tensor(mask, dtype=torch.float64)
        if host:
            if len(self._count_cache) > 64:
                self._count_cache.clear()
            self._count_cache[key] = counts
        return counts

    def scalar(self, key: str, value: float) -> None:
        """Record one Python number under ``key``."""
        self._sums[key] = self._sums.get(key, 0.0) + float(value)
        self._counts[key] = self._counts.get(key, 0) + 1

    def read(self, reset: bool = True) -> dict[str, float]:
        """The mean of every key over the interval, plus ``steps``; ``reset`` starts a new one."""
        self.flush()
        sums, counts = dict(self._sums), dict(self._counts)
        for (quantities, names), (total, count) in self._tables.items():
            rows = total.tolist()
            per = count.tolist() if isinstance(count, Tensor) else None
            for i, name in enumerate(names):
                for j, quantity in enumerate(quantities):
                    n = count if per is None else per[i][j]
                    if n:
                        key = f"{quantity}/{name}"
                        sums[key] = sums.get(key, 0.0) + rows[i][j]
                        counts[key] = counts.get(key, 0) + n
        out = {key: total / counts[key] for key, total in sums.items()}
        out["steps"] = float(self.steps)
        out["recorded_steps"] = float(self.recorded)
        if reset:
            self._tables.clear()
            self._sums.clear()
            self._counts.clear()
            self.steps = self.recorded = 0
        return out


def _plain(value: Tensor) -> Tensor:
    """``value`` as a plain tensor: a DTensor's (a norm on FSDP2 shards, on the reference path)
    whole value, the same on every rank (a collective where it is still a partial sum: the
    ranks all record the step)."""
    dtensor = _dtensor_type()
    if dtensor is not None and isinstance(value, dtensor):
        return value.full_tensor()
    return value


def recorder(optimizer: torch.optim.Optimizer) -> Recorder:
    """The optimizer's `Recorder`, created on first use (kept out of pickles and copies)."""
    rec = optimizer.__dict__.get("_telemetry_recorder")
    if rec is None:
        rec = Recorder()
        optimizer.__dict__["_telemetry_recorder"] = rec
    return rec


def read(optimizer: torch.optim.Optimizer, reset: bool = True) -> dict[str, float]:
    """What ``optimizer.telemetry(reset)`` returns (an empty interval: only the two counts)."""
    return recorder(optimizer).read(reset)


def name_parameters(optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
    """Name ``optimizer``'s tensors after ``model.named_parameters()`` in its telemetry.

    Groups that carry torch's ``param_names`` keep those. The loggers call this with the model
    they are attached to, so any optimizer gets readable names.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    names = recorder(optimizer).names
    for name, p in model.named_parameters():
        names.setdefault(id(p), name)
    inner = getattr(optimizer, "optimizer", None)  # a Lookahead wrapper's inner optimizer
    if isinstance(inner, torch.optim.Optimizer):
        name_parameters(inner, model)


def param_names(optimizer: torch.optim.Optimizer, group_index: int) -> list[str]:
    """The telemetry names of group ``group_index``'s tensors, in order."""
    group = optimizer.param_groups[group_index]
    given = group.get("param_names")
    if given is not None:
        return list(given)
    known = recorder(optimizer).names
    return [known.get(id(p), f"group{group_index}.param{j}") for j, p in enumerate(group["params"])]


def enabled(optimizer: torch.optim.Optimizer) -> bool:
    """True when any param group has ``telemetry`` on."""
    return any(group.get("telemetry") for group in optimizer.param_groups)


def due(optimizer: torch.optim.Optimizer, group: dict[str, Any]) -> bool:
    """True when ``group`` records per-layer values in this step: its ``telemetry`` is True, or
    an int ``N`` and this is the optimizer's ``N``-th, ``2N``-th, ... step."""
    every = group.get("telemetry")
    if not every:
        return False
    return every is True or recorder(optimizer).seen % every == 0


def tick(optimizer: torch.optim.Optimizer) -> None:
    """Count an optimizer step (call before the step's recording decisions)."""
    recorder(optimizer).seen += 1


def record_step(optimizer: torch.optim.Optimizer, skipped: bool) -> None:
    """Per optimizer step: count it, note whether it was skipped, and each group's lr."""
    rec = recorder(optimizer)
    rec.steps += 1
    rec.scalar("skipped", float(skipped))
    for i, group in enumerate(optimizer.param_groups):
        if group.get("telemetry"):
            rec.scalar(f"lr/group{i}", float(group["lr"]))
    if any(due(optimizer, group) for group in optimizer.param_groups):
        rec.recorded += 1


class BucketProbe:
    """What a transform records into for one bucket: ``ctx.telemetry.add(quantity, values)``.

    ``values`` holds one 0-d tensor per tensor of the bucket (``ctx.params`` order), or per
    tensor listed in ``index``.
    """

    def __init__(self, rec: Recorder, names: list[str]):
        self.recorder = rec
        self.names = names
        self.weight_norms: list[Tensor] = []

    def add(
        self, quantity: str, values: Sequence[Tensor], index: Sequence[int] | None = None
    ) -> None:
        names = self.names if index is None else [self.names[i] for i in index]
        self.recorder.add(quantity, names, values)


def names_by_param(optimizer: torch.optim.Optimizer, group_index: int) -> dict[int, str]:
    """``id(param) -> name`` for group ``group_index`` (see `param_names`).

    Kept between steps while the group's tensors, its ``param_names`` and the names known to
    the recorder stay the same (the key is checked every step), so a recorded step does not
    rebuild it tensor by tensor.
    """
    group = optimizer.param_groups[group_index]
    rec = recorder(optimizer)
    given = group.get("param_names")
    key = (
        group_index,
        tuple(map(id, group["params"])),
        None if given is None else tuple(given),
        len(rec.names),
    )
    cached = rec.names_cache.get(group_index)
    if cached is not None and cached[0] == key:
        return cached[1]
    names = dict(zip(key[1], param_names(optimizer, group_index), strict=True))
    rec.names_cache[group_index] = (key, names)
    return names


# Recorded steps whose fused-kernel stats wait, per bucket, to be turned into quantities in one
# batch (at a read, or when `batch_limit` of them have gathered): a step then costs a list
# append. A batch's cost is mostly a fixed number of tensor operations: on ResNet-18's 62 tensors
# (1 thread) 0.6 ms for 32 steps, 1.0 ms for 128 (8 us per step of a 10 ms step; 1.6 and 2.8 ms
# before the batch took its columns contiguous and its masks per quantity: `Recorder.flush`).
# The rows bound keeps what waits bounded for models of many tensors (65,536 rows of 9 float64
# sums: 4.5 MiB), and still lets 2,048 tensors wait 32 steps (a batch every 4 steps made a
# recorded step on 2,000 small tensors slower, not faster).
STATS_BATCH = 128
STATS_ROWS = 65536


def batch_limit(tensors: int) -> int:
    """Recorded steps of a bucket of ``tensors`` tensors that wait before they are turned into
    quantities: `STATS_BATCH`, fewer where that many steps would hold over `STATS_ROWS` rows.

    >>> batch_limit(62), batch_limit(2000), batch_limit(100_000)
    (128, 32, 1)
    """
    return max(1, min(STATS_BATCH, STATS_ROWS // max(tensors, 1)))


class _StatsLayout(NamedTuple):
    """What a bucket's stats hold (fixed while the group's settings are): the batch key."""

    names: tuple[str, ...]
    trust: bool
    adam: bool
    radam_beta2: float | None
    gc: bool  # the chain centralizes gradients (of the tensors with dim > 1)


class _StatsStep(NamedTuple):
    """One recorded step of a bucket: the kernel's stats and the step's own numbers."""

    stats: Tensor | GatheredStats  # GatheredStats: resolved when the batch is
    lr: float | Tensor
    steps: Sequence[int] | Tensor
    sync: bool | Tensor
    # per tensor: GC centralizes it (dim > 1); taken on a batch's first step only (layout.gc)
    gc_rows: tuple[bool, ...] | None


def record_stats(
    optimizer: torch.optim.Optimizer,
    group: dict[str, Any],
    kernel: Any,
    names: list[str],
    weights: Sequence[Tensor],
    stats: Tensor | GatheredStats,
    steps: Sequence[int] | Tensor,
) -> None:
    """Record one bucket's quantities from the ``stats`` a fused kernel filled in its passes
    (on FSDP2 shards: a `rangerlab.fused.sharded.GatheredStats`, resolved when the batch is).

    ``kernel`` is the bucket's `rangerlab.fused.FusedKernel` (or the Triton step around one: it
    says which quantities the chain has), ``weights`` the bucket's tensors, ``steps`` each
    tensor's step count after the step (host numbers, or the device counters of the Triton
    path). The step's numbers (lr, step counts, the Lookahead sync decision) are taken now; the
    quantities are formed from up to `batch_limit` steps at once (`Recorder.read`). Everything
    stays on ``stats``' device.
    """
    radam = kernel.family == "adam" and kernel.radam
    layout = _StatsLayout(
        names=tuple(names),
        trust=bool(kernel.uses_trust(group)),
        adam=kernel.family == "adam",
        radam_beta2=float(group["betas"][1]) if radam else None,
        gc=bool(kernel.gc(group)),
    )
    lr = group["lr"]
    lr = lr.detach().to(stats.device, torch.float64, copy=True) if isinstance(lr, Tensor) else lr
    sync = kernel.sync(group)
    rec = recorder(optimizer)
    pending = rec.pending.setdefault(layout, [])
    sync = sync if isinstance(sync, Tensor) else bool(sync)
    gc_rows = tuple(w.dim() > 1 for w in weights) if layout.gc and not pending else None
    if radam and not isinstance(steps, Tensor) and len(set(steps)) == 1:
        steps = (steps[0],)  # the common case, one count for all (flush: K values, not K x n)
    pending.append(_StatsStep(stats, lr, steps, sync, gc_rows))
    if len(pending) >= batch_limit(len(names)):
        rec.flush(layout)


def _stats_quantities(
    layout: _StatsLayout, batch: Sequence[_StatsStep]
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The quantities of a batch of recorded steps, each a (steps, tensors) float64 tensor,
    and the masks of the entries they are recorded for (where absent: all)."""
    # (columns, K, n): each column contiguous (strided columns of (K, n, columns) made every
    # operation below several times slower on 2,000 tensors)
    stats = [b.stats if isinstance(b.stats, Tensor) else b.stats.resolve() for b in batch]
    stats = torch.stack(stats).permute(2, 0, 1).contiguous()
    device, f64 = stats.device, torch.float64
    k, n = stats.shape[1:]

    def per_step(values: list) -> Tensor:  # numbers or tensors, one per step -> (K, 1)
        if not any(isinstance(v, Tensor) for v in values):
            return torch.tensor(values, dtype=f64, device=device).reshape(k, 1)
        return torch.stack(
            [torch.as_tensor(v, dtype=f64, device=device).reshape(()) for v in values]
        ).reshape(k, 1)

    roots = stats[: columns.U_SQ + 1].sqrt()  # ||w||, ||g||, ||u||
    update = roots[columns.U_SQ] * per_step([b.lr for b in batch])
    cols = {
        "weight_norm": roots[columns.W_SQ],
        "grad_norm": roots[columns.G_SQ],
        "update_norm": update,
        "update_ratio": update / roots[columns.W_SQ],
    }
    masks: dict[str, Tensor] = {}
    if layout.trust:
        cols["trust_ratio"] = stats[columns.RATIO]
    if layout.adam:
        scale: float | Tensor = 1.0
        if layout.radam_beta2 is not None:
            beta2 = layout.radam_beta2
            if all(isinstance(b.steps, Tensor) for b in batch):  # device counters
                t = torch.stack([b.steps.to(device, f64).reshape(-1) for b in batch])
            elif all(len(b.steps) == 1 for b in batch):  # one count per step (record_stats)
                t = torch.tensor([b.steps[0] for b in batch], dtype=f64, device=device)
                t = t.reshape(k, 1)
            else:
                t = torch.tensor([list(b.steps) for b in batch], dtype=f64, device=device)
                t = t.reshape(k, -1)
            rect, adaptive = (x.expand(k, n) for x in _rectifier(t, beta2))
            scale = (1.0 - beta2**t).sqrt()  # RAdam's step is sqrt(1-b2^t)/(sqrt(v)+eps)
            cols["adaptive"] = adaptive.to(f64)
            cols["rectifier"] = rect
            masks["rectifier"] = masks["adaptive_lr_mean"] = masks["adaptive_lr_cv"] = adaptive
        mean = stats[columns.Q_MEAN]
        cols["adaptive_lr_mean"] = mean * scale
        cols["adaptive_lr_cv"] = (stats[columns.Q_M2] / stats[columns.Q_N]).sqrt() / mean
    if layout.gc:  # GC leaves tensors of dim <= 1 alone
        cols["gc_removed_norm"] = stats[columns.GC_SQ].sqrt()
        masks["gc_removed_norm"] = torch.tensor(batch[0].gc_rows, device=device).expand(k, n)
    syncs = [b.sync for b in batch]
    if any(isinstance(s, Tensor) or s for s in syncs):
        cols["lookahead_distance"] = stats[columns.DIST_SQ].sqrt()
        masks["lookahead_distance"] = per_step(syncs).expand(k, n) > 0
    return cols, masks


def norms(tensors: Sequence[Tensor]) -> list[Tensor]:
    """``||x||`` of each tensor (one foreach reduction where foreach kernels take the tensors)."""
    if tensors and foreach_supported(tensors):
        return list(torch._foreach_norm(list(tensors)))
    return [torch.linalg.vector_norm(t) for t in tensors]


class ForeignStep:
    """Telemetry around the step of an optimizer that records none itself (Lookahead's inner).

    Measures ``||w||`` and ``||g||`` before the step and ``||Δw||`` after it, from a copy of the
    weights taken before (so it costs one extra copy of the weights per step).
    """

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer
        self.tensors: list[tuple[str, Tensor, Tensor]] = []
        with torch.no_grad():
            for i, group in enumerate(optimizer.param_groups):
                if due(optimizer, group):
                    for name, p in zip(param_names(optimizer, i), group["params"], strict=True):
                        if p.grad is not None:
                            self.tensors.append((name, p, p.detach().clone()))
        names = [name for name, _, _ in self.tensors]
        self.names = names
        self.weight_norms = norms([before for _, _, before in self.tensors])
        rec = recorder(optimizer)
        rec.add("weight_norm", names, self.weight_norms)
        rec.add("grad_norm", names, norms([p.grad for _, p, _ in self.tensors]))

    def finish(self, skipped: bool) -> None:
        """Record the step's displacement (after the wrapped optimizer stepped)."""
        record_step(self.optimizer, skipped)
        with torch.no_grad():
            moved = [torch.linalg.vector_norm(p.detach() - b) for _, p, b in self.tensors]
        rec = recorder(self.optimizer)
        rec.add("update_norm", self.names, moved)
        ratios = [m / w for m, w in zip(moved, self.weight_norms, strict=True)]
        rec.add("update_ratio", self.names, ratios)


class _Probe(Transform):
    """Base of the two links `probed` puts around a chain when telemetry is on."""

    def __init__(self, optimizer: torch.optim.Optimizer, group_index: int, shared: dict):
        self.optimizer = optimizer
        self.group_index = group_index
        self.shared = shared  # per step: the names by state dict, shared by both probes


class _Entry(_Probe):
    """First link: opens the bucket's probe and records ``||w||`` and ``||g||``."""

    def update(self, updates: list[Tensor], ctx: Context) -> list[Tensor]:
        if "by_state" not in self.shared:
            group = self.optimizer.param_groups[self.group_index]
            names = param_names(self.optimizer, self.group_index)
            state = self.optimizer.state
            self.shared["by_state"] = {
                id(state[p]): n for p, n in zip(group["params"], names) if p in state
            }
        by_state = self.shared["by_state"]
        probe = BucketProbe(recorder(self.optimizer), [by_state[id(s)] for s in ctx.states])
        ctx.telemetry = probe
        probe.weight_norms = norms(ctx.params)
        probe.add("weight_norm", probe.weight_norms)
        probe.add("grad_norm", norms(updates))  # the chain's private copy of the gradients
        return updates


class _Exit(_Probe):
    """Last link before ``w -= lr u``: records ``||lr u||`` and its ratio to ``||w||``."""

    def update(self, updates: list[Tensor], ctx: Context) -> list[Tensor]:
        probe = ctx.telemetry
        lr = ctx.group["lr"]
        lr = lr.detach().to(torch.float64).cpu() if isinstance(lr, Tensor) else float(lr)
        steps = [n * lr for n in norms(updates)]
        probe.add("update_norm", steps)
        probe.add("update_ratio", [s / w for s, w in zip(steps, probe.weight_norms, strict=True)])
        return updates


def probed(
    optimizer: torch.optim.Optimizer, group: dict[str, Any], transforms: Sequence[Transform]
) -> tuple[Transform, ...]:
    """``transforms`` between the two telemetry probes: the chain of a recorded step that no
    fused kernel records (the reference path; the probes are not fused-kernel links)."""
    index = next((i for i, g in enumerate(optimizer.param_groups) if g is group), None)
    if index is None:  # a group being added: it is not in param_groups yet
        return tuple(transforms)
    shared: dict = {}
    entry, leave = _Entry(optimizer, index, shared), _Exit(optimizer, index, shared)
    # Links after the direction act in ``after_update`` only (Lookahead), so the exit probe,
    # last, sees the final direction.
    return (entry, *transforms, leave)
