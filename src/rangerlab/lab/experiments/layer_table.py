"""The lecture's LARS table: per layer, weight, gradient and update norms and the trust ratio."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from .. import plots, stats
from ..data import load_digits
from ..models import DigitsCNN
from ..optimizers import CNN_LR
from ..training import seed_everything, train_classifier

ID = "layer-table"
TITLE = "Per-layer norms and the LARS trust ratio"
DESCRIPTION = "weight, gradient and update norms per layer of a trained CNN, and the trust ratio"
CLAIM = (
    "With one global learning rate, the update-to-weight ratio differs between layers by more "
    "than 10x, which is what LARS's per-layer trust ratio corrects."
)
TRUST = 1e-3  # LARS's trust coefficient (rangerlab.LARS's default)
WEIGHT_DECAY = 5e-4

CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {"epochs": 1, "batch_size": 128},
    "quick": {"epochs": 3, "batch_size": 64},
    "full": {"epochs": 20, "batch_size": 64},
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


def run(cfg: dict[str, Any], seeds: list[int], bar) -> dict[str, Any]:
    """Train with SGD+momentum, then measure every layer on a fixed batch of 256 examples."""
    bar.reset(total=len(seeds))
    data = load_digits()
    per_seed = []
    for seed in seeds:
        generator = seed_everything(seed)
        model = DigitsCNN()
        opt = torch.optim.SGD(
            model.parameters(), lr=CNN_LR["momentum"], momentum=0.9, weight_decay=WEIGHT_DECAY
        )
        train_classifier(
            model,
            opt,
            data,
            epochs=cfg["epochs"],
            batch_size=cfg["batch_size"],
            generator=generator,
        )
        per_seed.append(layer_norms(model, opt, data.x_train[:256], data.y_train[:256]))
        bar.update()
    layers = list(per_seed[0])
    keys = ["weight", "grad", "update", "ratio", "trust"]
    table = {name: {k: [s[name][k] for s in per_seed] for k in keys} for name in layers}
    rows = [[name, *[stats.fmt(table[name][k]) for k in keys]] for name in layers]
    weights = [n for n in layers if n.endswith("weight")]
    spread = [
        math.log10(max(s[n]["ratio"] for n in weights) / min(s[n]["ratio"] for n in weights))
        for s in per_seed
    ]
    outcome = stats.compare_to(spread, 1.0)
    detail = (
        f"Across the weight tensors, max/min of ||update||/||w|| spans "
        f"{stats.fmt(spread)} decades (the claim needs more than 1)."
    )
    return {
        "setup": (
            f"The digits CNN trained {cfg['epochs']} epochs with SGD (lr "
            f"{CNN_LR['momentum']}, momentum 0.9, weight decay {WEIGHT_DECAY}); then, on a "
            f"fixed batch of 256 training digits, each parameter tensor's norms and the "
            f"step SGD would take next. Trust ratio = {TRUST} ||w|| / (||g|| + "
            f"{WEIGHT_DECAY} ||w||), as LARS computes it."
        ),
        "table": {
            "columns": [
                "layer",
                "||w||",
                "||g||",
                "||update||",
                "||update|| / ||w||",
                "LARS trust ratio",
            ],
            "rows": rows,
        },
        "verdict": stats.verdict(outcome, detail),
        "data": {"layers": table, "ratio_spread_decades": spread},
    }


def plot(result: dict[str, Any], fig_dir: Path) -> list[str]:
    """Per layer (log scale): the update/weight ratio and the LARS trust ratio."""
    layers = result["data"]["layers"]
    names = list(layers)
    fig, axes = plots.figure(1, 1, width=7)
    ax = axes[0, 0]
    plots.bars(
        ax,
        names,
        {
            "||update|| / ||w|| (SGD)": [layers[n]["ratio"] for n in names],
            "LARS trust ratio": [layers[n]["trust"] for n in names],
            "||g|| / ||w||": [
                list(np.divide(layers[n]["grad"], layers[n]["weight"])) for n in names
            ],
        },
    )
    ax.set(yscale="log", title="per layer, one global learning rate")
    ax.legend(fontsize=7)
    return [plots.save(fig, fig_dir, "layer-table.png")]
