"""You et al.'s LARS table: per layer, ||w|| / ||grad w|| at the first iteration of a deeper net."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from .. import plots
from ..data import digits_split
from ..models import DeepCNN
from ..protocol import Comparison, Experiment
from ..training import seed_everything

TRUST = 1e-3  # LARS's trust coefficient (rangerlab.LARS's default)
WEIGHT_DECAY = 5e-4
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


def layer_norms(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x, y) -> dict:
    """Per parameter: ``‖w‖``, ``‖g‖`` on batch ``(x, y)``, ``‖Δw‖`` of the step ``optimizer``
    would take (measured on copies, so nothing is changed), their ratio, and the LARS trust
    ratio ``TRUST * ‖w‖ / (‖g‖ + wd ‖w‖)``."""
    twin = copy.deepcopy(model)
    twin_opt = type(optimizer)(twin.parameters(), **optimizer.defaults)
    twin_opt.load_state_dict(optimizer.state_dict())
    twin_opt.zero_grad()
    F.cross_entropy(twin(x), y).backward()
    before = {n: p.detach().clone() for n, p in twin.named_parameters()}
    grads = {n: p.grad.detach().clone() for n, p in twin.named_parameters()}
    twin_opt.step()
    out = {}
    for name, p in twin.named_parameters():
        w, g = before[name].norm().item(), grads[name].norm().item()
        u = (p.detach() - before[name]).norm().item()
        out[name] = {
            "weight": w,
            "grad": g,
            "update": u,
            "ratio": u / w if w else math.nan,
            "trust": TRUST * w / (g + WEIGHT_DECAY * w) if g else 1.0,
        }
    return out


def trial(cfg: dict[str, Any], arm: str, seed: int) -> dict[str, Any]:
    """A fresh seeded DeepCNN, one batch of training digits: per layer ``‖w‖/‖g‖`` and the
    spread of that ratio across layers in decades."""
    data = digits_split("test")
    generator = seed_everything(seed)
    model = DeepCNN(cfg["width"])
    idx = torch.randperm(len(data.y_train), generator=generator)[: cfg["batch_size"]]
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=WEIGHT_DECAY)
    table = layer_norms(model, opt, data.x_train[idx], data.y_train[idx])
    ratio = {n: table[n]["weight"] / table[n]["grad"] for n in LAYERS}
    return {
        **{f"w/g {n}": ratio[n] for n in LAYERS},
        **{f"|w| {n}": table[n]["weight"] for n in LAYERS},
        **{f"|g| {n}": table[n]["grad"] for n in LAYERS},
        "spread_decades": math.log10(max(ratio.values()) / min(ratio.values())),
    }


def comparisons(cfg: dict[str, Any]) -> list[Comparison]:
    """The spread of ``‖w‖/‖g‖`` across layers exceeds one decade."""
    return [
        Comparison(
            "log10(max / min) of ||w||/||g|| across the 8 weight layers",
            lambda m: m["init"]["spread_decades"],
            +1,
            threshold=THRESHOLD_DECADES,
            unit="(decades)",
        )
    ]


def table(result: dict[str, Any]) -> dict[str, Any]:
    """The per-layer table (means over seeds), as in You et al.'s Table 1."""
    runs = result["runs"]["init"]
    rows = []
    for n in LAYERS:
        w = np.mean([r[f"|w| {n}"] for r in runs])
        g = np.mean([r[f"|g| {n}"] for r in runs])
        ratio = [r[f"w/g {n}"] for r in runs]
        rows.append(
            [
                n,
                f"{w:.3g}",
                f"{g:.3g}",
                f"{np.mean(ratio):.3g}",
                f"{min(ratio):.3g} - {max(ratio):.3g}",
            ]
        )
    return {
        "title": "Per layer at the first iteration (mean over seeds; range = min - max)",
        "columns": ["layer", "||w||", "||grad w||", "||w|| / ||grad w||", "range"],
        "rows": rows,
    }


def setup(cfg: dict[str, Any]) -> str:
    """The setup paragraph."""
    return (
        f"An 8-layer CNN without normalization (six 3x3 convolutions of width {cfg['width']}, "
        f"{2 * cfg['width']}, {4 * cfg['width']}, two linear layers; PyTorch's default "
        f"initialisation), a fresh initialisation and batch of {cfg['batch_size']} training "
        f"digits per seed; the gradient of the cross-entropy at this first iteration, as in "
        f"You et al.'s table. Threshold: the claim needs the ratio's spread across layers above "
        f"{THRESHOLD_DECADES:g} decade (why: see the table's note)."
    )


def plot(result: dict[str, Any], fig_dir: Path) -> list[str]:
    """``‖w‖/‖g‖`` per layer, every seed and the mean, on a log axis."""
    runs = result["runs"]["init"]
    fig, axes = plots.figure(1, 1, width=7, height=3.8)
    ax = axes[0, 0]
    for j, n in enumerate(LAYERS):
        vals = [r[f"w/g {n}"] for r in runs]
        ax.plot([j] * len(vals), vals, "o", color="tab:blue", alpha=0.4, ms=4)
        ax.plot(j, np.mean(vals), "k_", ms=16, mew=2)
    ax.set_xticks(range(len(LAYERS)), [n.replace(".weight", "") for n in LAYERS], rotation=20)
    ax.set(
        yscale="log",
        ylabel="||w|| / ||grad w|| (log)",
        title="first iteration: every seed (dots) and the mean (bar)",
    )
    return [plots.save(fig, fig_dir, "layer-table.png")]


EXPERIMENT = Experiment(
    id="layer-table",
    title="Per-layer ||w|| / ||grad w|| (the LARS motivation)",
    description="You et al.'s table on an 8-layer CNN at the first iteration",
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
        **{f"w/g {n}": f"||w||/||g|| of {n}" for n in LAYERS},
    },
    comparisons=comparisons,
    trial=trial,
    configs=CONFIGS,
    seeds={"tiny": 2, "quick": 8, "full": 16},
    setup=setup,
    shows="How far apart the layers' weight-to-gradient ratios start on a deeper network.",
    cannot_show=(
        "Only the first iteration of one small architecture with default initialisation; the "
        "ratios move during training, and BN or other initialisations change them. A wide "
        "spread motivates layer-wise rates; it does not prove LARS trains better (see "
        "large-batch)."
    ),
    plot=plot,
    tables=lambda result: [table(result)],
    labels={"init": "first iteration"},
)
