"""The fused kernels on FSDP2 shards: each rank updates its local rows, norms summed once.

Under ``fully_shard`` a parameter is a DTensor split along dim 0 (``Shard(0)``), so a rank holds
whole rows: Gradient Centralization's row means and every element-wise update are local. Only the
trust ratios (LARS, LARC, LAMB, Ranger-LARS) need whole-tensor norms: the kernels' per-tensor
squared norms of the bucket are summed over the mesh by one ``all_reduce`` per bucket per step,
where the reference path would reduce tensor by tensor. State stays sharded: the kernels write
into the local shards of DTensor state, and state they create is wrapped back as DTensors laid out
like the parameter.

Telemetry: a recorded step's per-tensor sums (`rangerlab.fused.stats`) are of the local rows;
one ``all_gather`` per recorded bucket combines them (`combine_stats`), so every rank records the
whole tensors' quantities, as one process would. The gather is asynchronous (`GatheredStats`):
the step goes on, and the wait comes when telemetry turns the batch into quantities.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from .plans import NormReducer
from .stats import DIST_SQ, G_SQ, GC_SQ, Q_M2, Q_MEAN, Q_N, RATIO, U_SQ, W_SQ


def _dtensor_type() -> type | None:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch build without distributed
        return None
    return DTensor


def row_sharded(weights: list[Tensor]) -> bool:
    """True when every tensor is a DTensor on a 1-D mesh, placed ``Shard(0)``."""
    dtensor = _dtensor_type()
    if dtensor is None or not all(isinstance(w, dtensor) for w in weights):
        return False
    from torch.distributed.tensor import Shard

    return all(w.device_mesh.ndim == 1 and tuple(w.placements) == (Shard(0),) for w in weights)


def local_tensors(weights: list[Tensor]) -> list[Tensor]:
    """The ranks' local shards (views: writing them writes the DTensors)."""
    return [w.to_local() for w in weights]


#: The stats columns that are sums over a tensor's elements (or GC rows): they add over ranks.
SUM_COLUMNS = (W_SQ, G_SQ, U_SQ, GC_SQ, DIST_SQ)


def combine_stats(per_rank: Tensor) -> Tensor:
    """One bucket's telemetry stats of the whole tensors from each rank's, ``(ranks, n, 9)``.

    Sums of squares over the elements add. The adaptive factor's count, mean and sum of
    squared deviations combine as in one pass over all elements (Chan et al. 1979):
    ``n = sum n_r``, ``mean = sum n_r mean_r / n``, ``M2 = sum (M2_r + n_r (mean_r - mean)^2)``.
    The trust ratio is the whole tensor's on every rank already (it comes from norms summed over
    the ranks): rank 0's is kept. Ranks are combined in rank order, so every rank gets the same.

    >>> a = torch.tensor([[[1.0, 4, 9, 2, 1.5, 0.5, 0, 0, 0.7]]], dtype=torch.float64)
    >>> b = torch.tensor([[[3.0, 1, 1, 2, 3.5, 0.5, 0, 0, 0.7]]], dtype=torch.float64)
    >>> combine_stats(torch.cat([a, b])).tolist()
    [[4.0, 5.0, 10.0, 4.0, 2.5, 5.0, 0.0, 0.0, 0.7]]
    """
    out = per_rank[0].clone()
    sums = list(SUM_COLUMNS)
    out[:, sums] = per_rank[:, :, sums].sum(0)
    n, mean, m2 = per_rank[..., Q_N], per_rank[..., Q_MEAN], per_rank[..., Q_M2]
    total = n.sum(0)
    merged_mean = torch.where(total > 0, (n * mean).sum(0) / total.clamp(min=1), 0.0)
    out[:, Q_N] = total
    out[:, Q_MEAN] = merged_mean
    out[:, Q_M2] = (m2 + n * (mean - merged_mean).square()).sum(0)
    out[:, RATIO] = per_rank[0, :, RATIO]
    return out


class GatheredStats:
    """A recorded bucket's stats while the ranks' sums are still on their way (an async
    ``all_gather``): `resolve` waits for them and combines them (`combine_stats`) into the
    local stats tensor, once.

    The step does not wait: a recorded step used to wait at a blocking ``all_gather`` for the
    slowest rank (on 2 gloo ranks of ResNet-18's shapes, the fused Ranger step with telemetry
    took 12.0 ms against 8.2 ms without). The wait moves to when telemetry turns the stats into
    quantities (a read, or a full batch: `rangerlab.telemetry.batch_limit`), which waits only
    on the rank's own request: a read on one rank alone (a logger on rank 0) never starts a
    collective the other ranks would have to join.
    """

    def __init__(self, local: Tensor, work: Any, gathered: list[Tensor]):
        self.local = local
        self.device = local.device
        self._work, self._gathered = work, gathered

    def resolve(self) -> Tensor:
        """The whole tensors' stats (waits for the gather the first time)."""
        if self._work is not None:
            self._work.wait()
            self.local.copy_(combine_stats(torch.stack(self._gathered)))
            self._work = self._gathered = None
        return self.local


class ShardedStep:
    """Runs a fused kernel (CPU or Triton) on the local shards of ``Shard(0)`` DTensors."""

    def __init__(self, inner):
        self.inner = inner
        self.device_steps = getattr(inner, "device_steps", False)
        self.direct_low_precision = getattr(inner, "direct_low_precision", False)

    def __repr__(self) -> str:
        return f"ShardedStep({self.inner!r})"

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    @property
    def records(self) -> bool:
        """Fills telemetry stats when the kernel it runs does (summed over ranks here)."""
        return bool(getattr(self.inner, "records", False))

    def __call__(
        self,
        group: dict[str, Any],
        weights: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
        steps_or_control,
        stats: Tensor | None = None,
    ) -> GatheredStats | None:
        """One fused step on the local shards; see the module note. With ``stats``
        (telemetry), returns the `GatheredStats` that resolve to the whole tensors' sums on
        every rank."""
        dtensor = _dtensor_type()

        def local(value):
            return value.to_local() if isinstance(value, dtensor) else value

        local_states = [{key: local(value) for key, value in s.items()} for s in states]
        pg = weights[0].device_mesh.get_group()

        def reduce_norms(sq_norms: Tensor) -> None:
            dist.all_reduce(sq_norms, op=dist.ReduceOp.SUM, group=pg)

        reducer: NormReducer = reduce_norms
        recording = {} if stats is None else {"stats": stats}
        self.inner(
            group,
            local_tensors(weights),
            [local(g) for g in grads],
            local_states,
            steps_or_control,
            reduce_norms=reducer,
            **recording,
        )
        gathered = None
        if stats is not None:  # the local rows' sums -> the whole tensors' (one collective)
            parts = [torch.empty_like(stats) for _ in range(dist.get_world_size(pg))]
            work = dist.all_gather(parts, stats, group=pg, async_op=True)
            gathered = GatheredStats(stats, work, parts)
        for w, s, mine in zip(weights, states, local_states, strict=True):
            for key, value in mine.items():
                old = s.get(key)
                if isinstance(old, dtensor):
                    if value.data_ptr() == old.to_local().data_ptr():
                        continue
                elif key in s and value is old:
                    continue
                s[key] = _like(w, value) if _is_shard_of(w, value) else value
        return gathered


def _is_shard_of(weight: Tensor, value: Any) -> bool:
    return isinstance(value, Tensor) and value.shape == weight.to_local().shape and value.dim() > 0


def _like(weight: Tensor, shard: Tensor) -> Tensor:
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(
        shard,
        weight.device_mesh,
        weight.placements,
        run_check=False,
        shape=weight.shape,
        stride=torch.empty(weight.shape, device="meta").stride(),
    )
