"""Rectified Adam (Liu et al., ICLR 2020)."""

from __future__ import annotations

from torch import Tensor

from . import _scalars as xp
from .adam import AdamMoments, update_moments
from .base import Context


def _rectifier(step, beta2: float):
    """``(r_t, rho_t > 5)`` for a number or a tensor of steps; r_t is 1 where rho_t <= 5."""
    bias_correction2 = 1.0 - beta2**step
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * step * (beta2**step) / bias_correction2
    adaptive = rho_t > 5.0
    # Where adaptive, rho_inf > rho_t > 5; elsewhere both stand-ins below keep r_t finite.
    rho_inf = max(rho_inf, 6.0)
    rho = xp.where(adaptive, rho_t, rho_inf)
    r = xp.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
    return r, adaptive


def rectification(step: int, beta2: float) -> float | None:
    """RAdam's variance rectification term r_t, or None while rho_t <= 5 (torch's threshold).

    ``rho_inf = 2/(1-beta2) - 1``, ``rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)``,
    ``r_t = sqrt((rho_t-4)(rho_t-2) rho_inf / ((rho_inf-4)(rho_inf-2) rho_t))``.

    Example:
        >>> rectification(5, 0.999) is None, round(rectification(6, 0.999), 4)
        (True, 0.0258)
    """
    r, adaptive = _rectifier(step, beta2)
    return r if adaptive else None


def radam_scalars(step, beta1: float, beta2: float):
    """RAdam's per-step scalars ``(a, d, adaptive)``: the one place they are written.

    In the Adam family's form ``u = a * m / (sqrt(v) / d + eps)`` (``u = a * m`` where not
    ``adaptive``): while ``rho_t <= 5``, ``a = 1 / (1 - beta1^t)`` (bias-corrected momentum);
    then ``a = r_t sqrt(1 - beta2^t) / (1 - beta1^t)``; ``d = 1``. ``step`` is a number or a
    tensor of step counts (then ``a`` and ``adaptive`` are tensors on its device).
    """
    bias_correction1 = 1.0 - beta1**step
    r, adaptive = _rectifier(step, beta2)
    a = xp.where(adaptive, r * xp.sqrt(1.0 - beta2**step), 1.0) / bias_correction1
    return a, 1.0, adaptive


class ScaleByRAdam(AdamMoments):
    """RAdam's direction, exactly as torch.optim.RAdam computes it (its displacement over lr).

    With Adam's moments ``m_t, v_t`` and ``m_hat = m_t / (1 - beta1^t)``:

    * while ``rho_t <= 5`` (the first steps, when the variance of the adaptive rate is not
      defined): ``u <- m_hat`` (bias-corrected momentum, SGD-like);
    * then ``u <- r_t * m_hat * sqrt(1 - beta2^t) / (sqrt(v_t) + eps)``.

    No warmup is needed: the rectifier ``r_t`` (:func:`rectification`) plays its role. The
    per-step scalars come from :func:`radam_scalars`, which the fused kernels use too.

    State: ``exp_avg``, ``exp_avg_sq``.

    References:
        Liu, Jiang, He, Chen, Liu, Gao, Han. "On the Variance of the Adaptive Learning Rate and
        Beyond", ICLR 2020. arXiv:1908.03265.
    """

    def update(self, updates: list[Tensor], ctx: Context) -> list[Tensor]:
        beta1, beta2 = ctx.group["betas"]
        exp_avg, exp_avg_sq = update_moments(updates, ctx)
        ops = ctx.ops
        scalars = [radam_scalars(t, beta1, beta2) for t in ctx.steps]
        ops.copy_(updates, exp_avg)
        ops.mul_(updates, [a for a, _, _ in scalars])
        adaptive = [i for i, (_, _, on) in enumerate(scalars) if on]
        if adaptive:
            denom = ops.sqrt([exp_avg_sq[i] for i in adaptive])
            ops.add_scalar_(denom, ctx.group["eps"])
            ops.div_([updates[i] for i in adaptive], denom)
        return updates


def scale_by_radam() -> ScaleByRAdam:
    """RAdam transform; see :class:`ScaleByRAdam`."""
    return ScaleByRAdam()
