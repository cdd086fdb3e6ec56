"""You et al.'s LARS table: per layer, ||w|| / ||grad w|| at the first iteration of a deeper net,
and the trust ratio LARS applies to each layer, read from the library's telemetry."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

import rangerlab

from .. import plots
from ..data import digits_split
from ..models import DeepCNN
from ..optimizers import log_spread
from ..protocol import Comparison, Experiment
from ..training import seed_everything

TRUST = 1e-3  # LARS's trust coefficient (rangerlab.LARS's default)
WEIGHT_DECAY = 5e-4
LR = 1.0  # LARS's own scale (rangerlab.LARS's default): the trust ratio sets each layer's step
MOMENTUM = 0.9
#: "Differ widely": the largest ||w||/||g|| over the smallest, across layers, above one decade.
#: With one global rate, each layer's relative step ||dw||/||w|| = lr ||g||/||w|| then differs
#: by the same factor, so no single rate keeps every layer within ~3x (half a decade either
#: side) of a common relative step. You et al.'s AlexNet table spans about three decades.
THRESHOLD_DECADES = 1.0
LAYERS = [f"convs.{i}.weight" for i in range(6)] + ["fc1.weight", "fc2.weight"]

CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {"width": 4, "batch_size": 64},
    "quick": {"width": 16, "batch_size": 256},
    "full": {"width": 16, "batch_size": 256},
}


def layer_norms(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """What one LARS step on batch ``(x, y)`` records per parameter in the library's telemetry.

    A copy of ``model`` (so nothing of ``model`` changes) takes one step of
    ``rangerlab.create_optimizer(copy, "lars", ..., telemetry=True)`` on the cross-entropy of the
    batch, and the per-parameter values are read from ``opt.telemetry()`` (`rangerlab.telemetry`),
    not measured again here: ``weight`` = ``weight_norm`` (``‖w‖`` before the step), ``grad`` =
    ``grad_norm`` (``‖g‖``, before weight decay), ``update`` = ``update_norm`` (``‖Δw‖`` =
    ``lr ‖u‖``), ``ratio`` = ``update_ratio`` (``‖Δw‖ / ‖w‖``) and ``trust`` = ``trust_ratio``,
    the factor LARS applies, ``TRUST ‖w‖ / (‖g‖ + WEIGHT_DECAY ‖w‖ + eps)`` (You et al. 2017,
    eq. 6). Biases and 1-D weights get no trust ratio (`rangerlab.create_optimizer`'s rule), so
    their ``trust`` is 1.0: the factor the step applies to them.

    Returns:
        ``{parameter name: {"weight", "grad", "update", "ratio", "trust"}}`` (floats).

    Raises:
        RuntimeError: the telemetry did not record exactly the one step taken.
    """
    twin = copy.deepcopy(model)
    opt = rangerlab.create_optimizer(
        twin,
        "lars",
        lr=LR,
        momentum=MOMENTUM,
        weight_decay=WEIGHT_DECAY,
        trust_coefficient=TRUST,
        telemetry=True,
    )
    opt.zero_grad()
    F.cross_entropy(twin(x), y).backward()
    opt.step()
    seen = opt.telemetry()
    if seen["recorded_steps"] != 1:
        raise RuntimeError(f"expected one recorded step, telemetry says {seen['recorded_steps']}")
    return {
        name: {
            "weight": seen[f"weight_norm/{name}"],
            "grad": seen[f"grad_norm/{name}"],
            "update": seen[f"update_norm/{name}"],
            "ratio": seen[f"update_ratio/{name}"],
            "trust": seen.get(f"trust_ratio/{name}", 1.0),
        }
        for name, _ in twin.named_parameters()
    }


def trial(cfg: dict[str, Any], arm: str, seed: int) -> dict[str, Any]:
    """A fresh seeded DeepCNN, one batch of training digits, one LARS step with telemetry: per
    layer ``‖w‖/‖g‖``, the trust ratio LARS applied and its relative step ``‖Δw‖/‖w‖``, and the
    spread of ``‖w‖/‖g‖`` and of LARS's relative step across layers in decades."""
    data = digits_split("test")
    generator = seed_everything(seed)
    model = DeepCNN(cfg["width"])
    idx = torch.randperm(len(data.y_train), generator=generator)[: cfg["batch_size"]]
    table = layer_norms(model, data.x_train[idx], data.y_train[idx])
    ratio = {n: table[n]["weight"] / table[n]["grad"] for n in LAYERS}
    return {
        **{f"w/g {n}": ratio[n] for n in LAYERS},
        **{f"|w| {n}": table[n]["weight"] for n in LAYERS},
        **{f"|g| {n}": table[n]["grad"] for n in LAYERS},
        **{f"trust {n}": table[n]["trust"] for n in LAYERS},
        **{f"dw/w {n}": table[n]["ratio"] for n in LAYERS},
        "spread_decades": log_spread(list(ratio.values())),
        "lars_spread_decades": log_spread([table[n]["ratio"] for n in LAYERS]),
    }


def comparisons(cfg: dict[str, Any]) -> list[Comparison]:
    """Voting: the spread of ``‖w‖/‖g‖`` across layers exceeds one decade. Secondary: the
    spread of LARS's relative step ``‖Δw‖/‖w‖`` stays under one decade."""
    return [
        Comparison(
            "log10(max / min) of ||w||/||g|| across the 8 weight layers",
            lambda m: m["init"]["spread_decades"],
            +1,
            threshold=THRESHOLD_DECADES,
            unit="(decades)",
        ),
        Comparison(
            "log10(max / min) of LARS's ||dw||/||w|| across the 8 weight layers",
            lambda m: m["init"]["lars_spread_decades"],
            -1,
            threshold=THRESHOLD_DECADES,
            unit="(decades)",
            in_verdict=False,
        ),
    ]


def table(result: dict[str, Any]) -> dict[str, Any]:
    """The per-layer table (means over seeds), as in You et al.'s Table 1, with the trust ratio
    LARS applied and the relative step it took (from the step's telemetry)."""
    runs = result["runs"]["init"]
    rows = []
    for n in LAYERS:
        w = np.mean([r[f"|w| {n}"] for r in runs])
        g = np.mean([r[f"|g| {n}"] for r in runs])
        ratio = [r[f"w/g {n}"] for r in runs]
        trust = np.mean([r[f"trust {n}"] for r in runs])
        step = np.mean([r[f"dw/w {n}"] for r in runs])
        rows.append(
            [
                n,
                f"{w:.3g}",
                f"{g:.3g}",
                f"{np.mean(ratio):.3g}",
                f"{min(ratio):.3g} - {max(ratio):.3g}",
                f"{trust:.3g}",
                f"{step:.3g}",
            ]
        )
    return {
        "title": "Per layer at the first iteration, from one LARS step's telemetry (mean over "
        "seeds; range = min - max)",
        "columns": [
            "layer",
            "||w||",
            "||grad w||",
            "||w|| / ||grad w||",
            "range",
            "LARS trust ratio",
            "LARS ||dw|| / ||w||",
        ],
        "rows": rows,
    }


def setup(cfg: dict[str, Any]) -> str:
    """The setup paragraph."""
    return (
        f"An 8-layer CNN without normalization (six 3x3 convolutions of width {cfg['width']}, "
        f"{2 * cfg['width']}, {4 * cfg['width']}, two linear layers; PyTorch's default "
        f"initialisation), a fresh initialisation and batch of {cfg['batch_size']} training "
        f"digits per seed; the gradient of the cross-entropy at this first iteration, as in "
        f"You et al.'s table. Every number is what the library's telemetry recorded during one "
        f"step of rangerlab's LARS (lr {LR:g}, momentum {MOMENTUM:g}, trust coefficient "
        f"{TRUST:g}, weight decay {WEIGHT_DECAY:g}; create_optimizer's groups) on that batch: "
        f"||w|| before the step, ||grad w|| before weight decay, the trust ratio LARS applied "
        f"and its relative step ||dw||/||w||. Threshold: the claim needs the ratio's spread "
        f"across layers above {THRESHOLD_DECADES:g} decade (why: see the table's note)."
    )


def plot(result: dict[str, Any], fig_dir: Path) -> list[str]:
    """Per layer, every seed and the mean on log axes: ``‖w‖/‖g‖``; the trust ratio LARS
    applied and the relative step ``‖Δw‖/‖w‖`` it took."""
    runs = result["runs"]["init"]
    fig, axes = plots.figure(2, 1, width=5.2, height=3.8)
    ticks = [n.replace(".weight", "") for n in LAYERS]
    panels = [
        (
            axes[0, 0],
            [("w/g", "tab:blue", "||w|| / ||grad w||")],
            "||w|| / ||grad w|| (log)",
            "first iteration: every seed (dots) and the mean (bar)",
        ),
        (
            axes[0, 1],
            [("trust", "tab:orange", "trust ratio"), ("dw/w", "tab:green", "||dw|| / ||w||")],
            "per layer (log)",
            f"one LARS step (lr {LR:g}, eta {TRUST:g}): telemetry",
        ),
    ]
    for ax, series, ylabel, title in panels:
        for key, colour, label in series:
            for j, n in enumerate(LAYERS):
                vals = [r[f"{key} {n}"] for r in runs]
                ax.plot([j] * len(vals), vals, "o", color=colour, alpha=0.4, ms=4)
                ax.plot(j, np.mean(vals), "_", color="k", ms=16, mew=2)
            ax.plot([], [], "o", color=colour, label=label)
        ax.set_xticks(range(len(LAYERS)), ticks, rotation=30)
        ax.set(yscale="log", ylabel=ylabel, title=title)
        ax.legend(fontsize=7)
    return [plots.save(fig, fig_dir, "layer-table.png")]


EXPERIMENT = Experiment(
    id="layer-table",
    title="Per-layer ||w|| / ||grad w|| (the LARS motivation)",
    description="You et al.'s table on an 8-layer CNN at the first iteration, with LARS's trust "
    "ratios",
    claim=(
        "\"A single learning rate may make some layer's weight change exceed the weight itself "
        "(some layers need a large rate, some a small one) ... different layers need different "
        'weight/update ratios." Tested: ||w||/||grad w|| differs across the layers of an '
        "8-layer CNN by more than one decade at the first iteration."
    ),
    claim_zh=(
        "傳統優化器使用單一學習速率值,有可能造成某層的權重變化超過原始權重(有些需要大學習速率,"
        "有些需要較小的學習速率),導致學習震盪 上圖可以看到不同層需要的權值/學習率變化幅度不同"
    ),
    arms=lambda cfg: ["init"],
    metrics={
        "spread_decades": "log10(max/min) of ||w||/||g|| across layers",
        "lars_spread_decades": "log10(max/min) of LARS's ||dw||/||w|| across layers",
        **{f"w/g {n}": f"||w||/||g|| of {n}" for n in LAYERS},
        **{f"trust {n}": f"trust ratio LARS applied to {n} (telemetry)" for n in LAYERS},
        **{f"dw/w {n}": f"||dw||/||w|| of LARS's step on {n} (telemetry)" for n in LAYERS},
    },
    comparisons=comparisons,
    trial=trial,
    configs=CONFIGS,
    seeds={"tiny": 2, "quick": 8, "full": 16},
    setup=setup,
    shows=(
        "How far apart the layers' weight-to-gradient ratios start on a deeper network, and the "
        "trust ratio LARS applies to each layer in response (the lecture's LARS table), with the "
        "relative step ||dw||/||w|| that results: close to lr x trust coefficient in every layer."
    ),
    cannot_show=(
        "Only the first iteration of one small architecture with default initialisation; the "
        "ratios move during training, and BN or other initialisations change them. A wide "
        "spread motivates layer-wise rates; it does not prove LARS trains better (see "
        "large-batch). The LARS columns are one step at one rate; that its relative step is "
        "nearly equal across layers follows from its rule, it is shown, not discovered."
    ),
    plot=plot,
    tables=lambda result: [table(result)],
    labels={"init": "first iteration"},
)
