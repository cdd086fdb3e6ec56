"""The fused kernels on FSDP2 shards: each rank updates its local rows, norms summed once.

Under ``fully_shard`` a parameter is a DTensor split along dim 0 (``Shard(0)``), so a rank holds
whole rows: Gradient Centralization's row means and every element-wise update are local. Only the
trust ratios (LARS, LARC, LAMB, Ranger-LARS) need whole-tensor norms: the kernels' per-tensor
squared norms of the bucket are summed over the mesh by one ``all_reduce`` per bucket per step,
where the reference path would reduce tensor by tensor. State stays sharded: the kernels write
into the local shards of DTensor state, and state they create is wrapped back as DTensors laid out
like the parameter.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from .plans import NormReducer


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


class ShardedStep:
    """Runs a fused kernel (CPU or Triton) on the local shards of ``Shard(0)`` DTensors."""

    #: Telemetry's per-tensor sums would need summing over the ranks: recorded steps of sharded
    #: buckets take the reference path instead.
    records = False

    def __init__(self, inner):
        self.inner = inner
        self.device_steps = getattr(inner, "device_steps", False)
        self.direct_low_precision = getattr(inner, "direct_low_precision", False)

    def __repr__(self) -> str:
        return f"ShardedStep({self.inner!r})"

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def __call__(
        self,
        group: dict[str, Any],
        weights: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
        steps_or_control,
    ) -> None:
        """One fused step on the local shards; see the module note."""
        dtensor = _dtensor_type()

        def local(value):
            return value.to_local() if isinstance(value, dtensor) else value

        local_states = [{key: local(value) for key, value in s.items()} for s in states]
        pg = weights[0].device_mesh.get_group()

        def reduce_norms(sq_norms: Tensor) -> None:
            dist.all_reduce(sq_norms, op=dist.ReduceOp.SUM, group=pg)

        reducer: NormReducer = reduce_norms
        self.inner(
            group,
            local_tensors(weights),
            [local(g) for g in grads],
            local_states,
            steps_or_control,
            reduce_norms=reducer,
        )
        for w, s, mine in zip(weights, states, local_states, strict=True):
            for key, value in mine.items():
                old = s.get(key)
                if isinstance(old, dtensor):
                    if value.data_ptr() == old.to_local().data_ptr():
                        continue
                elif key in s and value is old:
                    continue
                s[key] = _like(w, value) if _is_shard_of(w, value) else value


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
