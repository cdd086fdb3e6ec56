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
        lr = group["lr"]
        if isinstance(lr, Tensor):  # any one-element shape: (1, 1) must not broadcast r up
            lr = lr.reshape(())
        r = xp.minimum(r / lr, 1.0)
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

    $$
    \\text{trust} = \\eta \\frac{\\|w\\|}{\\|g\\| + \\lambda \\|w\\| + \\epsilon},\\qquad
    u \\leftarrow \\text{trust} \\cdot (g + \\lambda w)
    $$

    ``trust`` is 1 where ``||w||`` or ``||g||`` is 0. With ``clip`` (LARC) it becomes
    ``min(trust / lr, 1)``, so the effective rate ``lr * trust`` never exceeds ``lr``. In a group
    whose ``trust_ratio`` is false (biases and norm weights, by the SimCLR convention) the update
    is just ``g + lambda * w``.

    Param-group keys (with defaults): ``trust_coefficient`` (0.001), ``eta`` above; ``eps``
    (1e-8); ``clip`` (False); ``trust_ratio`` (True); ``weight_decay`` (0.0), ``lambda``. No
    state.

    Examples:
        >>> ScaleByLARS.hyperparams["trust_coefficient"], ScaleByLARS.hyperparams["clip"]
        (0.001, False)

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
            if ctx.telemetry is not None:
                ctx.telemetry.add("trust_ratio", trust)
        if weight_decay != 0:
            ops.add_(updates, ctx.params, alpha=weight_decay)
        if trust is not None:
            ops.mul_(updates, trust)
        return updates


class ScaleByTrustRatio(Transform):
    """LAMB's trust ratio on the finished update direction.

    $$
    r = \\frac{\\min(\\|w\\|, c)}{\\|u\\|},\\qquad u \\leftarrow r\\,u
    $$

    with ``c = max_weight_norm`` (None: no cap). ``r`` is 1 where ``||w||`` or ``||u||`` is 0.
    Skipped in a group whose ``trust_ratio`` is false. Put it after the direction and the weight
    decay term: LAMB is ``scale_by_adam, add_decayed_weights, scale_by_trust_ratio``.

    Param-group keys (with defaults): ``max_weight_norm`` (10.0), ``trust_ratio`` (True). No
    state.

    Examples:
        >>> ScaleByTrustRatio.hyperparams
        {'max_weight_norm': 10.0, 'trust_ratio': True}

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

        trust = per_tensor(ops, ratio, ops.norm(ctx.params), ops.norm(updates))
        if ctx.telemetry is not None:
            ctx.telemetry.add("trust_ratio", trust)
        ops.mul_(updates, trust)
        return updates


def scale_by_lars() -> ScaleByLARS:
    """LARS's (or LARC's) layer-wise trust ratio as a link of a chain; put momentum after it.

    Returns:
        A new [`ScaleByLARS`][rangerlab.transforms.ScaleByLARS]; it reads ``trust_coefficient``
        (default 0.001), ``eps`` (1e-8), ``clip`` (False), ``trust_ratio`` (True) and
        ``weight_decay`` (0.0) from the param group.

    Examples:
        ``||w|| = 5`` and ``||g|| = 2``, so ``trust = 0.1 * 5 / 2 = 0.25``:

        >>> import torch
        >>> from rangerlab import Chain
        >>> w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
        >>> w.grad = torch.tensor([0.0, 2.0])
        >>> Chain([w], [scale_by_lars()], lr=1.0, trust_coefficient=0.1).step()
        >>> w.detach()
        tensor([3.0000, 3.5000])
    """
    return ScaleByLARS()


def scale_by_trust_ratio() -> ScaleByTrustRatio:
    """LAMB's layer-wise trust ratio as a link of a chain; put it after the direction and decay.

    Returns:
        A new [`ScaleByTrustRatio`][rangerlab.transforms.ScaleByTrustRatio]; it reads
        ``max_weight_norm`` (default 10.0) and ``trust_ratio`` (True) from the param group.

    Examples:
        The update is rescaled to the weight's norm: ``||w|| / ||g|| = 5 / 2``, so ``w[1]`` moves
        by ``0.1 * 2.5 * 2 = 0.5``:

        >>> import torch
        >>> from rangerlab import Chain
        >>> w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
        >>> w.grad = torch.tensor([0.0, 2.0])
        >>> Chain([w], [scale_by_trust_ratio()], lr=0.1).step()
        >>> w.detach()
        tensor([3.0000, 3.5000])
    """
    return ScaleByTrustRatio()
