"""How wide is each optimizer's range of good learning rates on the digits CNN?"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import plots, stats
from ..optimizers import CNN_LR, label, make_optimizer
from ..training import train_digits_config

ID = "lr-sensitivity"
TITLE = "Learning-rate sensitivity"
DESCRIPTION = "final loss against learning rate (log grid) per optimizer on the digits CNN"
CLAIM = "RAdam is less sensitive to the learning rate than Adam: its range of good rates is wider."
OPTS = ["sgd", "momentum", "adam", "radam", "ranger", "lars", "ranger-lars"]
GOOD = 0.1  # a rate is good when its test accuracy is within GOOD of the sweep's best

CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {"subset": 256, "epochs": 1, "batch_size": 256, "decades": 2.0, "points": 3},
    "quick": {"subset": 512, "epochs": 5, "batch_size": 64, "decades": 2.4, "points": 7},
    "full": {"epochs": 10, "batch_size": 64, "decades": 2.5, "points": 11},
}


def run(cfg: dict[str, Any], seeds: list[int], bar) -> dict[str, Any]:
    """Sweep each optimizer's rate over ``reference * 10**[-decades, +decades]``."""
    factors = np.logspace(-cfg["decades"], cfg["decades"], cfg["points"])
    spacing = 2 * cfg["decades"] / (cfg["points"] - 1)
    bar.reset(total=len(OPTS) * len(factors) * len(seeds))
    sweep: dict[str, Any] = {}
    for name in OPTS:
        lrs = [float(CNN_LR[name] * f) for f in factors]
        loss, acc = [], []  # [lr][seed]
        for lr in lrs:
            runs = []
            for seed in seeds:
                make = lambda p, n=name, r=lr: make_optimizer(n, p, r)  # noqa: E731
                runs.append(train_digits_config(make, seed, cfg))
                bar.update()
            loss.append([r["train_loss"][-1] for r in runs])
            acc.append([r["test_acc"][-1] for r in runs])
        sweep[name] = {"lr": lrs, "train_loss": loss, "test_acc": acc}
    best = max(a for s in sweep.values() for per_lr in s["test_acc"] for a in per_lr)
    width: dict[str, list[float]] = {}
    for name, s in sweep.items():
        per_seed = np.asarray(s["test_acc"]).T  # [seed][lr]
        width[name] = [float((row >= best - GOOD).sum() * spacing) for row in per_seed]
    rows = [
        [
            label(n),
            f"{sweep[n]['lr'][0]:.2g} .. {sweep[n]['lr'][-1]:.2g}",
            f"{sweep[n]['lr'][int(np.argmax(np.mean(sweep[n]['test_acc'], 1)))]:.2g}",
            f"{max(np.mean(sweep[n]['test_acc'], 1)):.3f}",
            stats.fmt(width[n]),
        ]
        for n in OPTS
    ]
    outcome = stats.compare(width["radam"], width["adam"])
    detail = (
        f"Width of the good range (decades): RAdam {stats.fmt(width['radam'])}, "
        f"Adam {stats.fmt(width['adam'])}."
    )
    return {
        "setup": (
            f"Each optimizer trains the digits CNN for {cfg['epochs']} epochs at batch "
            f"{cfg['batch_size']} at {cfg['points']} rates spaced {spacing:.2g} decades "
            f"apart around its reference rate. A rate is good when its test accuracy is "
            f"within {GOOD} of the best accuracy of the whole sweep ({best:.3f}); the width "
            f"is the number of good rates times the spacing, in decades."
        ),
        "table": {
            "columns": [
                "optimizer",
                "lr range",
                "best lr",
                "best test acc",
                "good range (decades)",
            ],
            "rows": rows,
        },
        "verdict": stats.verdict(outcome, detail),
        "data": {"sweep": sweep, "width": width, "best_acc": best, "good": GOOD},
    }


def plot(result: dict[str, Any], fig_dir: Path) -> list[str]:
    """Final training loss and test accuracy against the learning rate, per optimizer."""
    fig, axes = plots.figure(2, 1, width=5.5)
    for name, s in result["data"]["sweep"].items():
        plots.band(axes[0, 0], s["lr"], np.asarray(s["train_loss"]).T, label(name), marker=".")
        plots.band(axes[0, 1], s["lr"], np.asarray(s["test_acc"]).T, label(name), marker=".")
    axes[0, 0].set(xscale="log", yscale="log", xlabel="learning rate", ylabel="final train loss")
    axes[0, 1].set(xscale="log", xlabel="learning rate", ylabel="final test accuracy")
    axes[0, 1].axhline(result["data"]["best_acc"] - result["data"]["good"], color="k", ls=":", lw=1)
    axes[0, 0].legend(fontsize=7)
    return [plots.save(fig, fig_dir, "lr-sensitivity.png")]
