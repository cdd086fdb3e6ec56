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

    $$
    \\phi \\leftarrow \\phi + \\alpha(\\theta - \\phi),\\qquad \\theta \\leftarrow \\phi
    $$

    Args:
        ops: the list operations to use (a [`Context`][rangerlab.transforms.Context]'s ``ops``).
        fast: the fast weights ``theta``, changed in place.
        slow: the slow weights ``phi``, changed in place.
        alpha: the slow step size.

    Examples:
        With ``slow = 0``, ``fast = 4`` and ``alpha = 0.5``, both become 2:

        >>> import torch
        >>> from rangerlab._ops import FOREACH
        >>> fast, slow = [torch.tensor([4.0])], [torch.tensor([0.0])]
        >>> sync_(FOREACH, fast, slow, 0.5)
        >>> fast, slow
        ([tensor([2.])], [tensor([2.])])
    """
    ops.lerp_(slow, fast, alpha)
    ops.copy_(fast, slow)


def distances(fast: list[Tensor], slow: list[Tensor]) -> list[Tensor]:
    """Telemetry: ``||fast - slow||`` per tensor, the distance a sync pulls back."""
    return [torch.linalg.vector_norm(f - s) for f, s in zip(fast, slow)]


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

    $$
    \\phi \\leftarrow \\phi + \\alpha(\\theta - \\phi),\\qquad \\theta \\leftarrow \\phi
    $$

    Param-group keys (with defaults): ``k`` (6), ``alpha`` (0.5), and the shared step counter
    ``lookahead_step``.

    State: ``slow_param``.

    Examples:
        >>> LookaheadTransform.hyperparams, LookaheadTransform.state_keys
        ({'k': 6, 'alpha': 0.5}, ('slow_param',))

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
            slow = ctx.state("slow_param")
            if ctx.telemetry is not None:
                ctx.telemetry.add("lookahead_distance", distances(ctx.params, slow))
            sync_(ctx.ops, ctx.params, slow, ctx.group["alpha"])


def lookahead() -> LookaheadTransform:
    """Lookahead as the last link of a chain (it acts after the update, on the weights).

    Returns:
        A new [`LookaheadTransform`][rangerlab.transforms.LookaheadTransform]; it reads ``k``
        (default 6) and ``alpha`` (0.5) from the param group.

    Examples:
        Gradient 1 with ``lr=1``, ``k=2``, ``alpha=0.5`` from 3: 2, 1 (sync to 2), 1, 0 (sync to 1).

        >>> import torch
        >>> from rangerlab import Chain
        >>> w = torch.nn.Parameter(torch.tensor([3.0]))
        >>> opt = Chain([w], [lookahead()], lr=1.0, k=2, alpha=0.5)
        >>> path = []
        >>> for _ in range(4):
        ...     w.grad = torch.tensor([1.0])
        ...     opt.step()
        ...     path.append(w.item())
        >>> path
        [2.0, 2.0, 1.0, 1.0]
    """
    return LookaheadTransform()
