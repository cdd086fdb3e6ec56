"""Learning-rate schedules Ranger users expect, as ``torch.optim.lr_scheduler.LambdaLR`` objects.

Each schedule multiplies every group's initial lr by a closed-form factor of the scheduler's step
count ``t`` (the number of ``scheduler.step()`` calls so far; call it once per optimizer step).
The factor is a small callable object, so ``state_dict()`` saves it and a resumed scheduler
continues exactly. Warmups start at ``lr/W``, not 0: a first step at lr 0 would be wasted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


@dataclass
class WarmupFlatCosine:
    """The lr factor at step ``t``: linear warmup, flat, then a cosine anneal down to ``floor``.

    $$
    f(t) = \\begin{cases}
    (t+1)/W & t < W \\\\
    1 & t < D \\text{ (or always, when there is no decay)} \\\\
    \\text{floor} + (1-\\text{floor})\\,\\frac{1+\\cos(\\pi\\,\\min(t-D,\\,T-D)/(T-D))}{2}
    & \\text{otherwise}
    \\end{cases}
    $$

    Args:
        warmup_steps: ``W`` (0: no warmup).
        decay_start: ``D``, the step where the anneal starts (None: no anneal).
        total_steps: ``T``, the step where the anneal reaches ``floor`` and stays.
        floor: the final factor.

    Examples:
        >>> f = WarmupFlatCosine(warmup_steps=2, decay_start=4, total_steps=6)
        >>> [f(t) for t in range(8)]
        [0.5, 1.0, 1.0, 1.0, 1.0, 0.5, 0.0, 0.0]
    """

    warmup_steps: int = 0
    decay_start: int | None = None
    total_steps: int | None = None
    floor: float = 0.0

    def __call__(self, t: int) -> float:
        if t < self.warmup_steps:
            return (t + 1) / self.warmup_steps
        if self.decay_start is None or t < self.decay_start or self.total_steps <= self.decay_start:
            return 1.0
        span = self.total_steps - self.decay_start
        progress = min(t - self.decay_start, span) / span
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _steps(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"Invalid {name}: {value!r} (must be an int >= {minimum})")
    return value


def linear_warmup(optimizer: Optimizer, warmup_steps: int) -> LambdaLR:
    """Linear warmup: factor ``(t+1)/warmup_steps`` for ``t < warmup_steps``, then 1.

    Args:
        optimizer: any torch optimizer (rangerlab's or torch's).
        warmup_steps: ``W >= 1``; the ``W``-th step is the first at the full lr.

    Examples:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        >>> sched = linear_warmup(opt, 4)
        >>> lrs = []
        >>> for _ in range(6):
        ...     lrs.append(round(opt.param_groups[0]["lr"], 4))
        ...     opt.step()
        ...     sched.step()
        >>> lrs
        [0.025, 0.05, 0.075, 0.1, 0.1, 0.1]

    References:
        Goyal et al. "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", 2017.
    """
    return LambdaLR(optimizer, WarmupFlatCosine(_steps("warmup_steps", warmup_steps, 1)))


def untuned_warmup(optimizer: Optimizer, beta2: float | None = None) -> LambdaLR:
    """Untuned linear warmup for Adam-type optimizers: linear over ``2/(1-beta2)`` steps.

    Ma & Yarats' rule of thumb ``f_t = min(1, t(1-beta2)/2)`` (``t`` from 1): as long as the
    second-moment estimate averages over about ``2/(1-beta2)`` gradients. The step count is
    rounded to an int (2000 for ``beta2=0.999``).

    Args:
        optimizer: an optimizer whose param groups have ``betas`` (Adam, RAdam, Ranger, LAMB ...).
        beta2: the second-moment rate; None reads it from the optimizer's groups (they must agree).

    Examples:
        ``beta2 = 0.99`` gives a warmup of ``2 / (1 - 0.99) = 200`` steps, starting at lr/200:

        >>> import torch
        >>> import rangerlab
        >>> opt = rangerlab.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3, betas=(0.9, 0.99))
        >>> sched = untuned_warmup(opt)
        >>> opt.param_groups[0]["lr"]
        5e-06

    References:
        Ma, Yarats. "On the adequacy of untuned warmup for adaptive optimization", AAAI 2021.
        arXiv:1910.04209.
    """
    if beta2 is None:
        found = {g["betas"][1] for g in optimizer.param_groups if "betas" in g}
        if len(found) != 1:
            raise ValueError(
                f"Invalid beta2: None, and the optimizer's groups give {sorted(found)} "
                "(pass beta2= explicitly)"
            )
        (beta2,) = found
    if isinstance(beta2, bool) or not isinstance(beta2, (int, float)) or not 0.0 < beta2 < 1.0:
        raise ValueError(f"Invalid beta2: {beta2!r} (must be in (0, 1))")
    return linear_warmup(optimizer, max(1, round(2.0 / (1.0 - beta2))))


def flat_cosine(optimizer: Optimizer, total_steps: int, flat_fraction: float = 0.72) -> LambdaLR:
    """Ranger's recommended schedule: the full lr for a fraction of the run, then a cosine to 0.

    With ``D = round(flat_fraction * total_steps)``: factor 1 for ``t < D``, then
    ``(1 + cos(pi (t-D)/(total_steps-D)))/2``, reaching 0 at ``t = total_steps``.

    Args:
        optimizer: any torch optimizer.
        total_steps: the length of the run, in scheduler steps.
        flat_fraction: the flat part, in [0, 1].

    Examples:
        The factor of steps 0 to 5: flat for ``D = 2`` steps, then a cosine to 0 at step 5.

        >>> import torch
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        >>> factor = flat_cosine(opt, total_steps=5, flat_fraction=0.4).lr_lambdas[0]
        >>> [round(factor(t), 2) for t in range(6)]
        [1.0, 1.0, 1.0, 0.75, 0.25, 0.0]

    References:
        Wright, Ranger (github.com/lessw2020/Ranger-Deep-Learning-Optimizer), 2019; the flat +
        cosine anneal of fastai's ``fit_flat_cos``.
    """
    total = _steps("total_steps", total_steps, 1)
    if (
        isinstance(flat_fraction, bool)
        or not isinstance(flat_fraction, (int, float))
        or not (0.0 <= flat_fraction <= 1.0)
    ):
        raise ValueError(f"Invalid flat_fraction: {flat_fraction!r} (must be in [0, 1])")
    decay_start = round(flat_fraction * total)
    return LambdaLR(optimizer, WarmupFlatCosine(decay_start=decay_start, total_steps=total))


def warmup_cosine(
    optimizer: Optimizer, warmup_steps: int, total_steps: int, min_lr: float = 0.0
) -> LambdaLR:
    """Linear warmup over ``warmup_steps``, then a cosine anneal to ``min_lr`` at ``total_steps``.

    Factor ``(t+1)/W`` for ``t < W``, then ``floor + (1-floor)(1 + cos(pi (t-W)/(T-W)))/2`` with
    ``floor = min_lr / lr`` per group, so every group ends at ``min_lr`` (as
    ``CosineAnnealingLR``'s ``eta_min``).

    Args:
        optimizer: any torch optimizer.
        warmup_steps: ``W >= 0``.
        total_steps: ``T >= W``.
        min_lr: the final lr, at most every group's lr.

    Examples:
        The lr of steps 0 to 5: warmup over 2 steps, then a cosine from 0.1 to 0.01 at step 5.

        >>> import torch
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        >>> factor = warmup_cosine(opt, warmup_steps=2, total_steps=5, min_lr=0.01).lr_lambdas[0]
        >>> [round(0.1 * factor(t), 4) for t in range(6)]
        [0.05, 0.1, 0.1, 0.0775, 0.0325, 0.01]

    References:
        Loshchilov, Hutter. "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017;
        Goyal et al. 2017 (warmup).
    """
    warmup = _steps("warmup_steps", warmup_steps, 0)
    total = _steps("total_steps", total_steps, max(warmup, 1))
    if isinstance(min_lr, bool) or not isinstance(min_lr, (int, float)) or not min_lr >= 0:
        raise ValueError(f"Invalid min_lr: {min_lr!r} (must be >= 0)")
    factors = []
    for group in optimizer.param_groups:
        base = group.get("initial_lr", group["lr"])
        if min_lr > base:
            raise ValueError(f"Invalid min_lr: {min_lr!r} (above a group's lr {base!r})")
        floor = min_lr / base if base > 0 else 0.0
        factors.append(WarmupFlatCosine(warmup, warmup, total, floor))
    return LambdaLR(optimizer, factors)
