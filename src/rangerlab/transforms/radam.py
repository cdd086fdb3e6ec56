"""Rectified Adam (Liu et al., ICLR 2020)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import _scalars as xp
from .adam import AdamMoments, record_adaptive_lr, update_moments
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

    $$
    \\rho_\\infty = \\frac{2}{1-\\beta_2} - 1,\\quad
    \\rho_t = \\rho_\\infty - \\frac{2 t \\beta_2^t}{1-\\beta_2^t},\\quad
    r_t = \\sqrt{\\frac{(\\rho_t-4)(\\rho_t-2)\\rho_\\infty}
                     {(\\rho_\\infty-4)(\\rho_\\infty-2)\\rho_t}}
    $$

    Args:
        step: the step number ``t``, from 1.
        beta2: the second-moment EMA rate.

    Returns:
        ``r_t``, or None for the first steps, where RAdam takes a bias-corrected momentum step.

    Examples:
        With ``beta2 = 0.999`` the adaptive steps start at step 6, heavily damped:

        >>> rectification(5, 0.999) is None
        True
        >>> round(rectification(6, 0.999), 4), round(rectification(1000, 0.999), 4)
        (0.0258, 0.6453)

    References:
        Liu et al. "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020.
        arXiv:1908.03265.
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


def record_rectification(ctx: Context, rects: list[float | None], adaptive: list[int]) -> None:
    """Telemetry: ``r_t`` on adaptive steps, and whether each tensor's step was adaptive."""
    flags = torch.tensor([float(r is not None) for r in rects], dtype=torch.float64)
    ctx.telemetry.add("adaptive", flags)
    ctx.telemetry.add(
        "rectifier", torch.tensor([rects[i] for i in adaptive], dtype=torch.float64), adaptive
    )


class ScaleByRAdam(AdamMoments):
    """RAdam's direction, exactly as torch.optim.RAdam computes it (its displacement over lr).

    With Adam's moments ``m_t``, ``v_t`` (as in [`ScaleByAdam`][rangerlab.transforms.ScaleByAdam])
    and the bias-corrected momentum ``m_hat = m_t / (1 - beta1^t)``:

    $$
    u \\leftarrow \\begin{cases}
    \\hat m_t & \\rho_t \\le 5 \\text{ (the first steps: bias-corrected momentum)}\\\\
    r_t\\, \\hat m_t\\, \\sqrt{1-\\beta_2^t} / (\\sqrt{v_t}+\\epsilon) & \\text{otherwise}
    \\end{cases}
    $$

    While ``rho_t <= 5`` the variance of the adaptive rate is not defined, so the step is
    SGD-like. No warmup is needed: the rectifier ``r_t``
    ([`rectification`][rangerlab.transforms.rectification]) plays its role. The per-step
    scalars come from ``radam_scalars``, which the fused kernels use too.

    Param-group keys (with defaults): ``betas`` (``(0.9, 0.999)``), ``eps`` (1e-8).

    State: ``exp_avg``, ``exp_avg_sq``.

    Examples:
        >>> ScaleByRAdam.hyperparams
        {'betas': (0.9, 0.999), 'eps': 1e-08}

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
        if ctx.telemetry is not None:
            rects = [rectification(t, beta2) for t in ctx.steps]
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
    """RAdam's direction as a link of a chain; ``[scale_by_radam()]`` alone is torch's RAdam.

    Returns:
        A new [`ScaleByRAdam`][rangerlab.transforms.ScaleByRAdam]; it reads ``betas`` (default
        ``(0.9, 0.999)``) and ``eps`` (1e-8) from the param group.

    Examples:
        The first step is bias-corrected momentum, ``m_hat = g``, so the weights move by
        ``lr * g`` (not by ``lr * sign(g)`` as Adam's would):

        >>> import torch
        >>> from rangerlab import Chain
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
        >>> w.grad = torch.tensor([2.0, -0.5])
        >>> Chain([w], [scale_by_radam()], lr=0.1).step()
        >>> w.detach()
        tensor([0.8000, 1.0500])
    """
    return ScaleByRAdam()
