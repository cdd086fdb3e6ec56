"""Rectified Adam (Liu et al., ICLR 2020)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .adam import AdamMoments, record_adaptive_lr, update_moments
from .base import Context


def rectification(step: int, beta2: float) -> float | None:
    """RAdam's variance rectification term r_t, or None while rho_t <= 5 (torch's threshold).

    ``rho_inf = 2/(1-beta2) - 1``, ``rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)``,
    ``r_t = sqrt((rho_t-4)(rho_t-2) rho_inf / ((rho_inf-4)(rho_inf-2) rho_t))``.
    """
    bias_correction2 = 1.0 - beta2**step
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * step * (beta2**step) / bias_correction2
    if rho_t <= 5.0:
        return None
    return math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))


def record_rectification(ctx: Context, rects: list[float | None], adaptive: list[int]) -> None:
    """Telemetry: ``r_t`` on adaptive steps, and whether each tensor's step was adaptive."""
    flags = torch.tensor([float(r is not None) for r in rects], dtype=torch.float64)
    ctx.telemetry.add("adaptive", flags)
    ctx.telemetry.add(
        "rectifier", torch.tensor([rects[i] for i in adaptive], dtype=torch.float64), adaptive
    )


class ScaleByRAdam(AdamMoments):
    """RAdam's direction, exactly as torch.optim.RAdam computes it (its displacement over lr).

    With Adam's moments ``m_t, v_t`` and ``m_hat = m_t / (1 - beta1^t)``:

    * while ``rho_t <= 5`` (the first steps, when the variance of the adaptive rate is not
      defined): ``u <- m_hat`` (bias-corrected momentum, SGD-like);
    * then ``u <- r_t * m_hat * sqrt(1 - beta2^t) / (sqrt(v_t) + eps)``.

    No warmup is needed: the rectifier ``r_t`` (:func:`rectification`) plays its role.

    State: ``exp_avg``, ``exp_avg_sq``.

    References:
        Liu, Jiang, He, Chen, Liu, Gao, Han. "On the Variance of the Adaptive Learning Rate and
        Beyond", ICLR 2020. arXiv:1908.03265.
    """

    def update(self, updates: list[Tensor], ctx: Context) -> list[Tensor]:
        beta1, beta2 = ctx.group["betas"]
        exp_avg, exp_avg_sq = update_moments(updates, ctx)
        ops = ctx.ops
        ops.copy_(updates, exp_avg)
        rects = [rectification(t, beta2) for t in ctx.steps]
        scale = [
            (1.0 if r is None else r * math.sqrt(1.0 - beta2**t)) / (1.0 - beta1**t)
            for t, r in zip(ctx.steps, rects)
        ]
        ops.mul_(updates, scale)
        adaptive = [i for i, r in enumerate(rects) if r is not None]
        if ctx.telemetry is not None:
            record_rectification(ctx, rects, adaptive)
        if adaptive:
            denom = ops.sqrt([exp_avg_sq[i] for i in adaptive])
            ops.add_scalar_(denom, ctx.group["eps"])
            if ctx.telemetry is not None:
                # the step applied is sqrt(1-b2^t)/(sqrt(v)+eps)
                corrections = [math.sqrt(1.0 - beta2 ** ctx.steps[i]) for i in adaptive]
                record_adaptive_lr(ctx, denom, adaptive, corrections)
            ops.div_([updates[i] for i in adaptive], denom)
        return updates


def scale_by_radam() -> ScaleByRAdam:
    """RAdam transform; see :class:`ScaleByRAdam`."""
    return ScaleByRAdam()
