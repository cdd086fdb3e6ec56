"""Adam's moment estimates (Kingma & Ba 2015)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from . import _scalars as xp
from .base import Context, Transform


def adam_scalars(step, beta1: float, beta2: float):
    """Adam's per-step scalars ``(a, d, adaptive)``: the one place they are written.

    Every path computes the direction as ``u = a * m / (sqrt(v) / d + eps)`` (``a * m`` where
    ``adaptive`` is false, which for Adam is never), here with ``a = 1 / (1 - beta1^t)`` and
    ``d = sqrt(1 - beta2^t)``: torch.optim.Adam's bias corrections. ``step`` is a number or a
    tensor of step counts (then the results are tensors on its device).

    Example:
        >>> adam_scalars(1, 0.5, 0.75)
        (2.0, 0.5, True)
    """
    return 1.0 / (1.0 - beta1**step), xp.sqrt(1.0 - beta2**step), True


def update_moments(updates: list[Tensor], ctx: Context) -> tuple[list[Tensor], list[Tensor]]:
    """Advance Adam's EMAs in place and return them.

    ``m <- b1 m + (1-b1) u``, ``v <- b2 v + (1-b2) u^2``.
    """
    beta1, beta2 = ctx.group["betas"]
    exp_avg, exp_avg_sq = ctx.state("exp_avg"), ctx.state("exp_avg_sq")
    ctx.ops.lerp_(exp_avg, updates, 1.0 - beta1)
    ctx.ops.mul_(exp_avg_sq, beta2)
    ctx.ops.addcmul_(exp_avg_sq, updates, updates, 1.0 - beta2)
    return exp_avg, exp_avg_sq


def adaptive_stats(steps: Iterable[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """Mean and coefficient of variation (population std over mean) of each tensor's values."""
    means, cvs = [], []
    for a in steps:
        if a.numel() == 0:
            mean = std = a.new_zeros(())
        else:
            std, mean = torch.std_mean(a, correction=0)
        means.append(mean)
        cvs.append(std / mean)
    return means, cvs


def record_adaptive_lr(
    ctx: Context,
    denoms: list[Tensor],
    index: list[int] | None = None,
    scales: list[float] | None = None,
) -> None:
    """Telemetry: mean and variation of the adaptive step ``scale/denom`` (see
    rangerlab.telemetry). The variation does not depend on the scale, so only means are scaled."""
    means, cvs = adaptive_stats(d.reciprocal() for d in denoms)
    if scales is not None:
        means = [m * s for m, s in zip(means, scales)]
    ctx.telemetry.add("adaptive_lr_mean", means, index)
    ctx.telemetry.add("adaptive_lr_cv", cvs, index)


class AdamMoments(Transform):
    """Base of the transforms built on Adam's moments: declares ``betas``, ``eps`` and the state.

    State: ``exp_avg``, ``exp_avg_sq`` (the names torch uses, so torch.optim.Adam state loads).
    """

    hyperparams = {"betas": (0.9, 0.999), "eps": 1e-8}
    state_keys = ("exp_avg", "exp_avg_sq")

    def init(self, param: Tensor, group: Mapping[str, Any]) -> dict[str, Tensor]:
        return {
            key: torch.zeros_like(param, memory_format=torch.preserve_format)
            for key in self.state_keys
        }


class ScaleByAdam(AdamMoments):
    """Adam's direction, exactly as torch.optim.Adam computes it.

    $$
    m_t = \\beta_1 m_{t-1} + (1-\\beta_1) u_t,\\quad
    v_t = \\beta_2 v_{t-1} + (1-\\beta_2) u_t^2,\\quad
    u \\leftarrow \\frac{m_t / (1-\\beta_1^t)}{\\sqrt{v_t / (1-\\beta_2^t)} + \\epsilon}
    $$

    Param-group keys (with defaults): ``betas`` (``(0.9, 0.999)``), ``(beta1, beta2)`` above;
    ``eps`` (1e-8).

    State: ``exp_avg`` and ``exp_avg_sq`` (``m`` and ``v``; torch's names, so a torch.optim.Adam
    state dict loads).

    Examples:
        >>> ScaleByAdam.hyperparams, ScaleByAdam.state_keys
        ({'betas': (0.9, 0.999), 'eps': 1e-08}, ('exp_avg', 'exp_avg_sq'))

    References:
        Kingma, Ba. "Adam: A Method for Stochastic Optimization", ICLR 2015. arXiv:1412.6980.
    """

    def update(self, updates: list[Tensor], ctx: Context) -> list[Tensor]:
        beta1, beta2 = ctx.group["betas"]
        exp_avg, exp_avg_sq = update_moments(updates, ctx)
        ops = ctx.ops
        scalars = [adam_scalars(t, beta1, beta2) for t in ctx.steps]
        denom = ops.sqrt(exp_avg_sq)
        ops.div_(denom, [d for _, d, _ in scalars])
        ops.add_scalar_(denom, ctx.group["eps"])
        if ctx.telemetry is not None:
            record_adaptive_lr(ctx, denom)
        ops.copy_(updates, exp_avg)
        ops.mul_(updates, [a for a, _, _ in scalars])
        ops.div_(updates, denom)
        return updates


def scale_by_adam() -> ScaleByAdam:
    """Adam's direction as a link of a chain; ``[scale_by_adam()]`` alone is torch's Adam.

    Returns:
        A new [`ScaleByAdam`][rangerlab.transforms.ScaleByAdam]; it reads ``betas`` (default
        ``(0.9, 0.999)``) and ``eps`` (1e-8) from the param group.

    Examples:
        Adam's first step moves each weight by ``lr`` against the sign of its gradient:

        >>> import torch
        >>> from rangerlab import Chain
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
        >>> w.grad = torch.tensor([2.0, -0.5])
        >>> Chain([w], [scale_by_adam()], lr=0.1).step()
        >>> w.detach()
        tensor([0.9000, 1.1000])

    References:
        Kingma, Ba. "Adam: A Method for Stochastic Optimization", ICLR 2015. arXiv:1412.6980.
    """
    return ScaleByAdam()
