"""Layer-wise trust ratios: LARS/LARC (You et al. 2017) and LAMB (You et al. 2020).

A ratio is computed per tensor ("layer") from two norms and multiplied into the update, so one
global learning rate gives each layer a step proportional to its own weight norm. The norms stay on
the device as 0-d tensors: no host synchronisation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._ops import FOREACH, Ops
from . import _scalars as xp
from .base import Context, Transform


def lars_ratio(w_norm, g_norm, group) -> Tensor:
    """LARS's trust ratio from the norms of a tensor's weight and gradient (the one owner).

    ``trust = trust_coefficient * ||w|| / (||g|| + weight_decay * ||w|| + eps)``, then with
    ``clip`` (LARC) ``min(trust / lr, 1)``; 1 where either norm is 0. Norms are numbers or
    tensors of per-tensor norms (the kernels pass all of a bucket's norms at once).

    Example:
        >>> lars_ratio(2.0, 4.0, dict(trust_coefficient=0.5, weight_decay=0.0, eps=0.0,
        ...                           clip=False, lr=1.0))
        0.25
    """
    weight_decay = group["weight_decay"]
    r = group["trust_coefficient"] * w_norm / (g_norm + weight_decay * w_norm + group["eps"])
    if group["clip"]:
        r = xp.minimum(r / group["lr"], 1.0)
    return xp.where((w_norm > 0) & (g_norm > 0), r, 1.0)


def lamb_ratio(w_norm, u_norm, group) -> Tensor:
    """LAMB's trust ratio from the norms of a tensor's weight and update (the one owner).

    ``r = min(||w||, max_weight_norm) / ||u||`` (no cap where ``max_weight_norm`` is None); 1 where
    either norm is 0. Norms are numbers or tensors of per-tensor norms.

    Example:
        >>> lamb_ratio(20.0, 4.0, dict(max_weight_norm=10.0))
        2.5
    """
    cap = group["max_weight_norm"]
    capped = w_norm if cap is None else xp.minimum(w_norm, cap)
    return xp.where((w_norm > 0) & (u_norm > 0), capped / xp.where(u_norm > 0, u_norm, 1.0), 1.0)


def per_tensor(ops: Ops, fn: Callable[..., Tensor], *columns: list[Tensor]) -> list[Tensor]:
    """Apply an elementwise ``fn`` to per-tensor scalars: stacked into one call on the list path."""
    if ops is FOREACH and columns and columns[0]:
        return list(fn(*(torch.stack(c) for c in columns)).unbind(0))
    return [fn(*row) for row in zip(*columns)]


class ScaleByLARS(Transform):
    """LARS (and LARC with ``clip``): the layer-wise trust ratio on the raw gradient.

    For each tensor, with ``g`` the incoming update and ``w`` the weight:

    .. math::
        \\text{trust} = \\eta \\frac{\\|w\\|}{\\|g\\| + \\lambda \\|w\\| + \\epsilon},\\qquad
        u \\leftarrow \\text{trust} \\cdot (g + \\lambda w)

    ``trust`` is 1 where ``||w||`` or ``||g||`` is 0. With ``clip`` (LARC) it becomes
    ``min(trust / lr, 1)``, so the effective rate ``lr * trust`` never exceeds ``lr``. In a group
    whose ``trust_ratio`` is false (biases and norm weights, by the SimCLR convention) the update
    is just ``g + lambda * w``. ``eta`` is ``trust_coefficient``, ``lambda`` is ``weight_decay``.

    References:
        You, Gitman, Ginsburg. "Large Batch Training of Convolutional Networks", 2017.
        arXiv:1708.03888. LARC: NVIDIA apex ``apex.parallel.LARC``.
    """

    hyperparams = {
        "trust_coefficient": 0.001,
        "eps": 1e-8,
        "clip": False,
        "trust_ratio": True,
        "weight_decay": 0.0,
    }

    def update(self, updates: list[Tensor], ctx: Context) -> list[Tensor]:
        group, ops = ctx.group, ctx.ops
        weight_decay = group["weight_decay"]
        trust = None
        if group["trust_ratio"]:

            def ratio(w_norm: Tensor, g_norm: Tensor) -> Tensor:
                return lars_ratio(w_norm, g_norm, group)

            trust = per_tensor(ops, ratio, ops.norm(ctx.params), ops.norm(updates))
        if weight_decay != 0:
            ops.add_(updates, ctx.params, alpha=weight_decay)
        if trust is not None:
            ops.mul_(updates, trust)
        return updates


class ScaleByTrustRatio(Transform):
    """LAMB's trust ratio on the finished update direction.

    .. math::
        r = \\frac{\\min(\\|w\\|, \\text{max\\_weight\\_norm})}{\\|u\\|},\\qquad u \\leftarrow r\\,u

    ``r`` is 1 where ``||w||`` or ``||u||`` is 0; ``max_weight_norm=None`` means no cap. Skipped in
    a group whose ``trust_ratio`` is false. Put it after the direction and the weight decay term:
    LAMB is ``scale_by_adam, add_decayed_weights, scale_by_trust_ratio``.

    References:
        You, Li, Reddi, et al. "Large Batch Optimization for Deep Learning: Training BERT in 76
        minutes", ICLR 2020. arXiv:1904.00962.
    """

    hyperparams = {"max_weight_norm": 10.0, "trust_ratio": True}

    def update(self, updates: list[Tensor], ctx: Context) -> list[Tensor]:
        group, ops = ctx.group, ctx.ops
        if not group["trust_ratio"]:
            return updates

        def ratio(w_norm: Tensor, u_norm: Tensor) -> Tensor:
            return lamb_ratio(w_norm, u_norm, group)

        ops.mul_(updates, per_tensor(ops, ratio, ops.norm(ctx.params), ops.norm(updates)))
        return updates


def scale_by_lars() -> ScaleByLARS:
    """LARS/LARC trust-ratio transform; see :class:`ScaleByLARS`."""
    return ScaleByLARS()


def scale_by_trust_ratio() -> ScaleByTrustRatio:
    """LAMB trust-ratio transform; see :class:`ScaleByTrustRatio`."""
    return ScaleByTrustRatio()
