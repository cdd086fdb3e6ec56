"""The one training loop every experiment uses, and its two workloads (digits CNN, char LSTM).

Seeding: :func:`seed_everything` seeds torch's global generator (model initialisation) and returns
a separate generator for the data order, so two arms run with the same seed start from the same
weights and see the same batches in the same order: the pairing the statistics rely on.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..amp import scaler_step
from ..transforms import rectification
from .data import CHARSET, digits_split, text_split
from .models import CharLSTM, DigitsCNN

Builder = Callable[[nn.Module], torch.optim.Optimizer]
CAP = 1e3  # a diverged run's loss is stored as this (JSON has no inf/NaN)


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global generator (model init) and return a generator for the data order."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed + 10_000)


def eval_weights(optimizer: torch.optim.Optimizer) -> contextlib.AbstractContextManager:
    """Swap in Lookahead's slow weights when the optimizer has them: the lab evaluates what a
    user would deploy (Zhang et al. 2019 evaluate the slow weights too)."""
    slow = getattr(optimizer, "slow_weights", None)
    return slow() if slow is not None else contextlib.nullcontext()


def finite(x: float) -> float:
    """``x``, or :data:`CAP` for a diverged (inf/NaN/huge) loss."""
    return x if math.isfinite(x) and x < CAP else CAP


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    steps: int,
    batch: Callable[[int], tuple[Tensor, Tensor]],
    loss_fn: Callable[[nn.Module, Tensor, Tensor], Tensor],
    evaluate: Callable[[], dict[str, float]],
    eval_every: int,
    lr_factor: Callable[[int], float] | None = None,
    autocast: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, Any]:
    """Run ``steps`` optimizer steps; call ``evaluate`` (on Lookahead's slow weights, if any)
    every ``eval_every`` steps and after the last.

    Args:
        batch: step index -> ``(inputs, targets)``.
        loss_fn: ``(model, inputs, targets) -> loss``.
        lr_factor: multiplies every group's initial lr at each step (a warmup), if given.
        autocast: run the forward pass under CPU autocast in this dtype (mixed precision).
        scaler: a GradScaler; the step goes through :func:`rangerlab.amp.scaler_step`.

    Returns ``{"curve": {"step": [...], <evaluate's keys>: [...]}, "final": <last evaluate>,
    "diverged": bool, "skipped": steps the scaler skipped}``.
    """
    base = [g["lr"] for g in optimizer.param_groups]
    curve: dict[str, list[float]] = {"step": []}
    diverged, skipped = False, 0
    for step in range(steps):
        if lr_factor is not None:
            for g, lr in zip(optimizer.param_groups, base, strict=True):
                g["lr"] = lr * lr_factor(step)
        x, y = batch(step)
        with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            loss = loss_fn(model, x, y)
        optimizer.zero_grad()
        if scaler is not None:
            scaler.scale(loss).backward()
            skipped += not scaler_step(scaler, optimizer)
        else:
            loss.backward()
            optimizer.step()
        diverged |= not math.isfinite(loss.item())
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            with eval_weights(optimizer), torch.no_grad():
                point = evaluate()
            curve["step"].append(step + 1)
            for key, value in point.items():
                curve.setdefault(key, []).append(finite(value))
    final = {key: values[-1] for key, values in curve.items() if key != "step"}
    return {"curve": curve, "final": final, "diverged": diverged, "skipped": skipped}


def epochs_of(n: int, batch_size: int, generator: torch.Generator) -> Callable[[int], Tensor]:
    """Step index -> the indices of that step's batch: shuffled epochs of ``n`` examples, the
    last incomplete batch of each epoch dropped (every step sees ``batch_size`` examples)."""
    per_epoch = n // batch_size
    if per_epoch < 1:
        raise ValueError(f"batch_size {batch_size} is larger than the {n} training examples")
    order: list[Tensor] = []

    def indices(step: int) -> Tensor:
        epoch, k = divmod(step, per_epoch)
        while len(order) <= epoch:
            order.append(torch.randperm(n, generator=generator))
        return order[epoch][k * batch_size : (k + 1) * batch_size]

    return indices


def _xent(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(model(x).float(), y)


def train_digits(
    build: Builder,
    seed: int,
    split: str,
    *,
    steps: int,
    batch_size: int,
    eval_every: int,
    model: Callable[[], nn.Module] = lambda: DigitsCNN(8),
    lr_factor: Callable[[int], float] | None = None,
    loss_target: float | None = None,
    autocast: torch.dtype | None = None,
    scaler: bool = False,
    probe: Callable[[nn.Module], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Train a fresh seeded model on the digits' training part with ``build(model)``; score on
    the ``split`` (``"val"`` or ``"test"``).

    Returns ``acc`` and ``loss`` on the split, ``train_acc``, ``train_loss`` (whole training
    part), ``gap`` (train - split accuracy), ``steps_to_target`` (first evaluation step with
    whole-training-set loss <= ``loss_target``; ``steps`` + ``eval_every`` when never: a
    censored value), ``diverged``, ``skipped``, the ``curve``, and what ``probe(model)`` measures
    on the trained model.
    """
    data = digits_split(split)
    generator = seed_everything(seed)
    net = model()
    optimizer = build(net)
    pick = epochs_of(len(data.y_train), batch_size, generator)

    def evaluate() -> dict[str, float]:
        train_logits, logits = net(data.x_train).float(), net(data.x_test).float()
        return {
            "train_loss": F.cross_entropy(train_logits, data.y_train).item(),
            "train_acc": (train_logits.argmax(1) == data.y_train).float().mean().item(),
            "loss": F.cross_entropy(logits, data.y_test).item(),
            "acc": (logits.argmax(1) == data.y_test).float().mean().item(),
        }

    def batch(step: int) -> tuple[Tensor, Tensor]:
        idx = pick(step)
        return data.x_train[idx], data.y_train[idx]

    scale = torch.amp.GradScaler("cpu") if scaler else None
    out = train(
        net,
        optimizer,
        steps=steps,
        batch=batch,
        loss_fn=_xent,
        evaluate=evaluate,
        eval_every=eval_every,
        lr_factor=lr_factor,
        autocast=autocast,
        scaler=scale,
    )
    final = out["final"]
    reached = [
        s
        for s, v in zip(out["curve"]["step"], out["curve"]["train_loss"], strict=True)
        if loss_target is not None and v <= loss_target
    ]
    return {
        **final,
        "gap": final["train_acc"] - final["acc"],
        "steps_to_target": float(reached[0] if reached else steps + eval_every),
        "diverged": float(out["diverged"]),
        "skipped": float(out["skipped"]),
        "curve": out["curve"],
        **(probe(net) if probe is not None else {}),
    }


def train_text(
    build: Builder,
    seed: int,
    split: str,
    *,
    steps: int,
    batch_size: int,
    seq: int,
    hidden: int,
    chars: int,
    eval_every: int,
    lr_factor: Callable[[int], float] | None = None,
) -> dict[str, Any]:
    """Train a fresh seeded :class:`CharLSTM` on random windows of the text's training part;
    score next-character cross-entropy on the ``split`` part, in nats (``loss``) and bits per
    character (``bpc``)."""
    train_ids, held = text_split(split, chars)
    generator = seed_everything(seed)
    net = CharLSTM(len(CHARSET), embed=16, hidden=hidden)
    optimizer = build(net)
    n = (len(held) - 1) // seq
    x_eval, y_eval = held[: n * seq].view(n, seq), held[1 : n * seq + 1].view(n, seq)

    def loss_fn(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(model(x).flatten(0, 1), y.flatten())

    def batch(step: int) -> tuple[Tensor, Tensor]:
        starts = torch.randint(0, len(train_ids) - seq - 1, (batch_size,), generator=generator)
        windows = torch.stack([train_ids[s : s + seq + 1] for s in starts.tolist()])
        return windows[:, :-1], windows[:, 1:]

    def evaluate() -> dict[str, float]:
        loss = loss_fn(net, x_eval, y_eval).item()
        return {"loss": loss, "bpc": loss / math.log(2)}

    out = train(
        net,
        optimizer,
        steps=steps,
        batch=batch,
        loss_fn=loss_fn,
        evaluate=evaluate,
        eval_every=eval_every,
        lr_factor=lr_factor,
    )
    return {**out["final"], "diverged": float(out["diverged"]), "curve": out["curve"]}


def warmup(steps: int) -> Callable[[int], float]:
    """Linear warmup factor ``min(1, (t+1)/steps)`` (starts at lr/steps, not 0)."""
    return lambda t: min(1.0, (t + 1) / max(steps, 1))


def rectifier(t: int, beta2: float) -> float:
    """RAdam's variance rectification term ``r_t`` at step ``t``, by the library's one rule
    (`rangerlab.transforms.rectification`, torch's threshold); 0 while ``rho_t <= 5``, when RAdam
    takes un-adapted momentum steps."""
    r = rectification(t, beta2)
    return 0.0 if r is None else r
