"""The learning-rate range test: ``rangerlab.lr_find(model, loss_fn, data, optimizer="ranger")``."""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

#: During the sweep, Lookahead's period is set beyond any sweep (the syncs are suspended).
_NO_SYNC = 2**62


@dataclass
class LRFindResult:
    """What `lr_find` measured, and the learning rate it suggests.

    Attributes:
        lrs: the learning rate of each step taken.
        losses: the loss of each step's batch, before that step.
        smoothed: the bias-corrected exponential moving average of ``losses``.
        suggestion: the suggested learning rate.
        reason: how ``suggestion`` was chosen, in words.
        steepest: the lr where the smoothed loss falls fastest per decade (None if too few
            steps).
        minimum: the lr of the lowest smoothed loss.
        diverged: the sweep stopped because the loss diverged (before reaching ``end_lr``).

    Examples:
        >>> import torch
        >>> import rangerlab
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Linear(4, 1)
        >>> x = torch.randn(64, 4)
        >>> data = [(x[i : i + 16], x[i : i + 16].sum(1, keepdim=True)) for i in range(0, 64, 16)]
        >>> loss_fn = torch.nn.functional.mse_loss
        >>> result = rangerlab.lr_find(model, loss_fn, data, "adam", num_steps=20)
        >>> len(result.lrs) == len(result.losses) == len(result.smoothed)
        True
        >>> result.minimum in result.lrs
        True
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    reason: str
    steepest: float | None
    minimum: float
    diverged: bool
    settings: dict[str, Any] = field(default_factory=dict)

    def plot(self, ax: Any = None) -> Any:
        """Draw the smoothed loss against the learning rate (log scale), with the suggestion.

        Needs matplotlib (imported here only). Returns the matplotlib figure.
        """
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 4))
        ax.plot(self.lrs, self.losses, color="0.75", lw=0.8, label="loss per batch")
        ax.plot(self.lrs, self.smoothed, color="C0", label="smoothed loss")
        ax.axvline(self.suggestion, color="C3", ls="--", label=f"suggestion {self.suggestion:.2g}")
        ax.set(xscale="log", xlabel="learning rate", ylabel="loss", title=self.reason)
        ax.title.set_fontsize(8)
        low, high = min(self.smoothed), self.smoothed[0]
        ax.set_ylim(low - 0.1 * (high - low + 1e-12), high + 0.6 * (high - low + 1e-12))
        ax.legend(fontsize=8)
        ax.figure.tight_layout()
        return ax.figure


def _batches(data: Iterable, steps: int) -> Iterable:
    """``steps`` batches from ``data``, starting it again as often as needed."""
    return itertools.islice(itertools.chain.from_iterable(itertools.repeat(data)), steps)


def _telemetry_recorders(opt: Optimizer) -> list[tuple[Optimizer, Any]]:
    """Copies of the telemetry recorders of ``opt`` (and of a wrapped optimizer), to restore."""
    owners = [opt, getattr(opt, "optimizer", None)]
    return [
        (o, copy.deepcopy(o.__dict__.get("_telemetry_recorder")))
        for o in owners
        if isinstance(o, Optimizer)
    ]


def _build(model: nn.Module, optimizer: str | Optimizer, kwargs: dict[str, Any]) -> Optimizer:
    if isinstance(optimizer, Optimizer):
        if kwargs:
            raise ValueError("optimizer_kwargs: only for an optimizer given by name")
        return optimizer
    if not isinstance(optimizer, str):
        raise TypeError(
            f"optimizer must be a factory name or a torch.optim.Optimizer, got {optimizer!r}"
        )
    from .factory import create_optimizer

    return create_optimizer(model, optimizer, lr=1.0, **kwargs)


def _age(step: int, smoothing: float) -> float:
    """The mean age in steps of the losses in the debiased moving average at ``step``."""
    weights = [smoothing**k for k in range(step + 1)]
    return sum(k * w for k, w in enumerate(weights)) / sum(weights)


def _suggest(
    lrs: list[float], smoothed: list[float], suggest: str, skip: tuple[int, int], smoothing: float
) -> tuple[float, str, float | None, float]:
    best = min(range(len(smoothed)), key=smoothed.__getitem__)
    minimum = lrs[best]
    start, end = skip[0], len(smoothed) - skip[1]
    steepest = None
    if end - start >= 3:
        logs = [math.log10(lr) for lr in lrs[start:end]]
        ys = smoothed[start:end]
        # central differences of loss over log10(lr): the slope per decade
        slopes = [
            (ys[i + 1] - ys[i - 1]) / (logs[i + 1] - logs[i - 1]) for i in range(1, len(ys) - 1)
        ]
        at = start + 1 + min(range(len(slopes)), key=slopes.__getitem__)
        steepest = lrs[max(0, at - round(_age(at, smoothing)))]
    if suggest == "steepest" and steepest is not None:
        reason = "steepest descent of the smoothed loss (per decade of lr)"
        return steepest, reason, steepest, minimum
    reason = f"a tenth of the lr of the lowest smoothed loss ({minimum:.2g})"
    if suggest == "steepest":
        reason += "; too few steps for a slope"
    return minimum / 10, reason, steepest, minimum


def lr_find(
    model: nn.Module,
    loss_fn: Any,
    data: Iterable,
    optimizer: str | Optimizer = "ranger",
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    smoothing: float = 0.98,
    diverge_factor: float = 4.0,
    suggest: str = "steepest",
    scaler: torch.amp.GradScaler | None = None,
    optimizer_kwargs: dict[str, Any] | None = None,
) -> LRFindResult:
    """Run the exponential learning-rate range test, then put everything back as it was.

    Step ``i`` of ``num_steps`` trains one batch with the rate
    ``lr_i = start_lr * (end_lr / start_lr) ** (i / (num_steps - 1))`` (every param group gets
    it) and records the batch's loss. The smoothed loss is the bias-corrected moving average
    ``a_i = s a_{i-1} + (1 - s) loss_i``, ``smoothed_i = a_i / (1 - s^(i+1))`` (``s`` is
    ``smoothing``); the sweep stops once ``smoothed_i > diverge_factor * min(smoothed)`` or a
    loss is not finite. The suggestion (``suggest``): ``"steepest"``, the rate where the smoothed
    loss falls fastest per decade of lr (the first 10% and last 2 points skipped, as Lightning's
    tuner does), taken at the mean age of the losses in the moving average there (a smoothed
    loss reflects earlier steps: without this the suggestion lands up to a decade too high), or
    ``"min"``, a tenth of the rate of the lowest smoothed loss (fastai's rule).

    With Lookahead (``ranger``, ``ranger_lars``, `rangerlab.Lookahead`), the syncs are
    suspended during the sweep: the curve is that of the fast weights, which the rate drives.

    Afterwards the model (parameters, buffers, gradients, train/eval mode), the optimizer passed
    in (state, param groups, counters), the ``scaler`` and torch's random number generators are
    exactly as they were (bit for bit).

    Args:
        model: the model; ``loss_fn(model(inputs), targets)`` is the loss of a batch.
        loss_fn: e.g. ``torch.nn.functional.cross_entropy``.
        data: an iterable of ``(inputs, targets)`` batches (a DataLoader), restarted as needed.
        optimizer: a `rangerlab.create_optimizer` name (built on ``model``), or an
            optimizer over the model's parameters.
        start_lr, end_lr: the sweep's range (``0 < start_lr < end_lr``).
        num_steps: the most steps to take (at least 2).
        smoothing: ``s`` in [0, 1).
        diverge_factor: stop when the smoothed loss exceeds this multiple of its minimum.
        suggest: ``"steepest"`` or ``"min"``.
        scaler: a ``torch.amp.GradScaler`` to scale the loss with, as in mixed-precision training.
        optimizer_kwargs: hyperparameters for an optimizer given by name (``weight_decay``...).

    Returns:
        `LRFindResult` (``result.suggestion``, ``result.plot()``).

    References:
        Smith. "Cyclical Learning Rates for Training Neural Networks", WACV 2017.
        arXiv:1506.01186. fastai's ``lr_find``; Lightning's ``Tuner.lr_find``.

    Examples:
        >>> import torch
        >>> import rangerlab
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Linear(4, 1)
        >>> x = torch.randn(64, 4)
        >>> data = [(x[i : i + 16], x[i : i + 16].sum(1, keepdim=True)) for i in range(0, 64, 16)]
        >>> before = [p.clone() for p in model.parameters()]
        >>> result = rangerlab.lr_find(model, torch.nn.functional.mse_loss, data, "ranger")
        >>> 1e-7 <= result.suggestion <= 10.0
        True
        >>> all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # put back
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not (0 < start_lr < end_lr) or not math.isfinite(end_lr):
        raise ValueError(
            f"Invalid start_lr, end_lr: {start_lr!r}, {end_lr!r} (need 0 < start < end)"
        )
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 2:
        raise ValueError(f"Invalid num_steps: {num_steps!r} (must be an int >= 2)")
    if not 0 <= smoothing < 1:
        raise ValueError(f"Invalid smoothing: {smoothing!r} (must be in [0, 1))")
    if not diverge_factor > 1:
        raise ValueError(f"Invalid diverge_factor: {diverge_factor!r} (must be > 1)")
    if suggest not in ("steepest", "min"):
        raise ValueError(f"Invalid suggest: {suggest!r} (expected 'steepest' or 'min')")
    opt = _build(model, optimizer, dict(optimizer_kwargs or {}))
    saved = {
        "model": copy.deepcopy(model.state_dict()),
        "grads": [(p, None if p.grad is None else p.grad.clone()) for p in model.parameters()],
        "modes": [(m, m.training) for m in model.modules()],
        "optimizer": copy.deepcopy(opt.state_dict()),
        "scaler": None if scaler is None else copy.deepcopy(scaler.state_dict()),
        "telemetry": _telemetry_recorders(opt),
        "rng": torch.random.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
    }
    try:
        result = _sweep(
            model, loss_fn, data, opt, scaler, start_lr, end_lr, num_steps, smoothing,
            diverge_factor,
        )  # fmt: skip
    finally:
        model.load_state_dict(saved["model"])
        for p, grad in saved["grads"]:
            p.grad = grad
        for module, training in saved["modes"]:
            module.training = training
        if isinstance(optimizer, Optimizer):
            opt.load_state_dict(saved["optimizer"])
            for owner, recorder in saved["telemetry"]:
                owner.__dict__["_telemetry_recorder"] = recorder
        if scaler is not None:
            scaler.load_state_dict(saved["scaler"])
        torch.random.set_rng_state(saved["rng"])
        if saved["cuda_rng"] is not None:
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
    lrs, losses, smoothed, diverged = result
    if not smoothed:
        raise RuntimeError("lr_find: no finite loss was recorded (is the data empty?)")
    skip = (len(smoothed) // 10, 2)
    suggestion, reason, steepest, minimum = _suggest(lrs, smoothed, suggest, skip, smoothing)
    settings = dict(start_lr=start_lr, end_lr=end_lr, num_steps=num_steps, smoothing=smoothing)
    return LRFindResult(
        lrs, losses, smoothed, suggestion, reason, steepest, minimum, diverged, settings
    )


def _sweep(model, loss_fn, data, opt, scaler, start_lr, end_lr, num_steps, smoothing, factor):
    for group in opt.param_groups:
        if "k" in group and "lookahead_step" in group:
            group["k"] = _NO_SYNC
    model.train()
    lrs, losses, smoothed = [], [], []
    average, best, diverged = 0.0, math.inf, False
    ratio = end_lr / start_lr
    for i, (inputs, targets) in enumerate(_batches(data, num_steps)):
        lr = start_lr * ratio ** (i / (num_steps - 1))
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        loss = loss_fn(model(inputs), targets)
        value = float(loss.detach())
        if not math.isfinite(value):
            diverged = True
            break
        (loss if scaler is None else scaler.scale(loss)).backward()
        if scaler is None:
            opt.step()
        else:
            scaler.step(opt)
            scaler.update()
        average = smoothing * average + (1 - smoothing) * value
        smooth = average / (1 - smoothing ** (i + 1))
        lrs.append(lr)
        losses.append(value)
        smoothed.append(smooth)
        best = min(best, smooth)
        if smooth > factor * best:
            diverged = True
            break
    return lrs, losses, smoothed, diverged
