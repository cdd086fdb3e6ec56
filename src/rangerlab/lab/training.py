"""Seeded training loops shared by the experiments."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .data import Digits


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global generator (model init) and return a generator for data order."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed + 10_000)


def eval_weights(optimizer: torch.optim.Optimizer) -> contextlib.AbstractContextManager:
    """Swap in Lookahead's slow weights if the optimizer has them (users evaluate on those)."""
    slow = getattr(optimizer, "slow_weights", None)
    return slow() if slow is not None else contextlib.nullcontext()


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``."""
    logits = model(x)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def train_classifier(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Digits,
    *,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    lr_factor: Callable[[int], float] | None = None,
    on_step: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """Train with shuffled mini-batches; record train/test loss and test accuracy after each epoch.

    Args:
        model, optimizer: what to train, and with what.
        data: the digits split.
        epochs: passes over the training set.
        batch_size: examples per step (the last, smaller batch of an epoch is kept).
        generator: the data-order generator (see :func:`seed_everything`).
        lr_factor: optional multiplier of every group's initial lr, as a function of the step.
        on_step: called with the step index after every optimizer step.

    Returns ``{"train_loss", "test_loss", "test_acc"}`` (lists, one entry per epoch; train loss
    is the mean over the epoch's batches), ``"train_acc"`` at the end and ``"diverged"``.
    """
    base = [g["lr"] for g in optimizer.param_groups]
    n = len(data.y_train)
    curves: dict[str, Any] = {"train_loss": [], "test_loss": [], "test_acc": []}
    step = 0
    diverged = False
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        total = 0.0
        batches = 0
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            if lr_factor is not None:
                for g, lr in zip(optimizer.param_groups, base, strict=True):
                    g["lr"] = lr * lr_factor(step)
            loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if on_step is not None:
                on_step(step)
            step += 1
            total += loss.item()
            batches += 1
        train_loss = total / batches
        with eval_weights(optimizer):
            test_loss, test_acc = evaluate(model, data.x_test, data.y_test)
        if not (math.isfinite(train_loss) and math.isfinite(test_loss)):
            diverged = True
        curves["train_loss"].append(_finite(train_loss))
        curves["test_loss"].append(_finite(test_loss))
        curves["test_acc"].append(test_acc)
    with eval_weights(optimizer):
        curves["train_acc"] = evaluate(model, data.x_train, data.y_train)[1]
    curves["diverged"] = diverged
    return curves


def _finite(x: float, cap: float = 1e3) -> float:
    """``x``, capped at ``cap`` (a diverged run's inf/NaN loss is stored as the cap)."""
    return x if math.isfinite(x) and x < cap else cap


def train_digits(
    make: Callable[[Any], torch.optim.Optimizer],
    seed: int,
    *,
    epochs: int,
    batch_size: int,
    width: int = 8,
    subset: int | None = None,
    lr_factor: Callable[[int], float] | None = None,
) -> dict[str, Any]:
    """Train a fresh, seeded :class:`DigitsCNN` with ``make(model.parameters())`` on the digits
    (only the first ``subset`` training images when given; the test set is always whole); see
    :func:`train_classifier` for what is returned."""
    from .data import load_digits
    from .models import DigitsCNN

    data = load_digits()
    if subset is not None:
        data = Digits(data.x_train[:subset], data.y_train[:subset], data.x_test, data.y_test)
    generator = seed_everything(seed)
    model = DigitsCNN(width)
    return train_classifier(
        model,
        make(model.parameters()),
        data,
        epochs=epochs,
        batch_size=batch_size,
        generator=generator,
        lr_factor=lr_factor,
    )


def train_digits_config(
    make: Callable[[Any], torch.optim.Optimizer], seed: int, cfg: dict[str, Any]
) -> dict[str, Any]:
    """:func:`train_digits` with a config's ``epochs``, ``batch_size`` and ``subset``."""
    return train_digits(
        make, seed, epochs=cfg["epochs"], batch_size=cfg["batch_size"], subset=cfg.get("subset")
    )
