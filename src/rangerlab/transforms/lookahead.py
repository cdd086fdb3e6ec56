"""Lookahead (Zhang, Lucas, Hinton, Ba; NeurIPS 2019): k steps forward, 1 step back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from .._ops import Ops
from .base import Context, Transform

#: Param-group key holding the optimizer's step count for Lookahead. Every group carries the same
#: value (one counter per optimizer); keeping it in the groups makes it part of ``state_dict`` in
#: the standard format that torch, ZeRO and distributed checkpointing all understand.
COUNTER = "lookahead_step"


def sync_(ops: Ops, fast: list[Tensor], slow: list[Tensor], alpha: float) -> None:
    """The Lookahead synchronisation: ``slow <- slow + alpha (fast - slow)``, then ``fast <- slow``.

    Example: with ``slow = 0``, ``fast = 4`` and ``alpha = 0.5``, both become 2.
    """
    ops.lerp_(slow, fast, alpha)
    ops.copy_(fast, slow)


def sync_due(group: dict[str, Any]) -> bool | Tensor:
    """True on the steps where ``group`` synchronises: its counter is a multiple of its ``k``.

    The one owner of the sync decision. The counter is a Python int, or a 0-d tensor on the GPU
    once a CUDA step has run under GradScaler (a skipped step then takes its count back on the
    device); the answer is then a 0-d bool tensor on that device.
    """
    return group[COUNTER] % group["k"] == 0


class LookaheadTransform(Transform):
    """Lookahead as the last link of a chain.

    Slow weights ``phi`` start as a copy of the weights at a tensor's first step, before that
    step's update (the paper's ``phi_0 = theta_0``). After every ``k``-th optimizer step:
    ``phi <- phi + alpha (theta - phi)``, ``theta <- phi``.

    State: ``slow_param``. Group keys: ``k``, ``alpha`` and the shared counter ``lookahead_step``.

    References:
        Zhang, Lucas, Hinton, Ba. "Lookahead Optimizer: k steps forward, 1 step back",
        NeurIPS 2019. arXiv:1907.08610.
    """

    hyperparams = {"k": 6, "alpha": 0.5}
    state_keys = ("slow_param",)

    def init(self, param: Tensor, group: Mapping[str, Any]) -> dict[str, Tensor]:
        return {"slow_param": param.detach().clone(memory_format=torch.preserve_format)}

    def init_group(self, group: dict[str, Any], others: list[dict[str, Any]]) -> None:
        # A group added mid-run joins the optimizer's count, so all groups sync together.
        group.setdefault(COUNTER, others[0].get(COUNTER, 0) if others else 0)

    def begin_step(self, group: dict[str, Any]) -> None:
        group[COUNTER] = group.get(COUNTER, 0) + 1

    def skip_step(self, group: dict[str, Any], skipped: Tensor) -> None:
        # On the CPU the flag is read for free and the counter stays an int; on a GPU reading it
        # would synchronise, so the counter becomes a 0-d tensor there (see sync_due).
        if skipped.device.type == "cpu" and not isinstance(group[COUNTER], Tensor):
            group[COUNTER] -= int(bool(skipped.item()))
        else:
            group[COUNTER] = group[COUNTER] - skipped.reshape(()).to(torch.int64)

    def after_update(self, ctx: Context) -> None:
        if sync_due(ctx.group):
            sync_(ctx.ops, ctx.params, ctx.state("slow_param"), ctx.group["alpha"])


def lookahead() -> LookaheadTransform:
    """Lookahead transform; see :class:`LookaheadTransform`."""
    return LookaheadTransform()
