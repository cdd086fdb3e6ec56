"""Accuracy against batch size, the learning rate scaled with the batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import plots, stats
from ..data import load_digits
from ..optimizers import CNN_LR, label, make_optimizer
from ..training import train_digits

ID = "large-batch"
TITLE = "Large batches"
DESCRIPTION = "test accuracy against batch size (32 to all) with scaled learning rates"
CLAIM = (
    "Large batches hurt SGD with momentum, and LARS fixes that: at large batch sizes LARS "
    "reaches a higher test accuracy than SGD+momentum."
)
OPTS = ["momentum", "lars", "ranger", "ranger-lars"]
#: How each optimizer's rate grows with the batch: linear for SGD-style (Goyal et al. 2017),
#: square root for Adam-style updates, whose size does not grow with the gradient.
SCALING = {"momentum": 1.0, "lars": 1.0, "ranger": 0.5, "ranger-lars": 0.5}
BASE_BATCH = 64  # the batch at which CNN_LR was chosen
LARGE = 256  # batches of at least this size count as large for the verdict

CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {"subset": 256, "epochs": 1, "batches": [128, 0]},
    "quick": {"epochs": 5, "batches": [32, 256, 0]},
    "full": {"epochs": 30, "batches": [32, 64, 128, 256, 512, 1024, 0]},
}


def run(cfg: dict[str, Any], seeds: list[int], bar) -> dict[str, Any]:
    """Train at each batch size (0 = the whole training set) for a fixed number of epochs."""
    n_train = cfg.get("subset") or len(load_digits().y_train)
    batches = [b or n_train for b in cfg["batches"]]
    bar.reset(total=len(OPTS) * len(batches) * len(seeds))
    acc: dict[str, list[list[float]]] = {}
    lrs: dict[str, list[float]] = {}
    for name in OPTS:
        acc[name], lrs[name] = [], []
        for batch in batches:
            lr = CNN_LR[name] * (batch / BASE_BATCH) ** SCALING[name]
            steps = cfg["epochs"] * -(-n_train // batch)
            warm = max(1, steps // 5)  # linear warmup over the first 20% of steps
            per_seed = []
            for seed in seeds:
                make = lambda p, n=name, r=lr: make_optimizer(n, p, r)  # noqa: E731
                r = train_digits(
                    make,
                    seed,
                    epochs=cfg["epochs"],
                    batch_size=batch,
                    subset=cfg.get("subset"),
                    lr_factor=lambda t, w=warm: min(1.0, (t + 1) / w),
                )
                per_seed.append(r["test_acc"][-1])
                bar.update()
            acc[name].append(per_seed)
            lrs[name].append(lr)
    large = [i for i, b in enumerate(batches) if b >= LARGE]
    mean_large = {
        n: [float(np.mean([acc[n][i][s] for i in large])) for s in range(len(seeds))] for n in OPTS
    }
    rows = [[label(n), *[stats.fmt(a) for a in acc[n]], stats.fmt(mean_large[n])] for n in OPTS]
    outcome = stats.compare(mean_large["lars"], mean_large["momentum"])
    detail = (
        f"Mean test accuracy over batches >= {LARGE}: LARS {stats.fmt(mean_large['lars'])}, "
        f"SGD+momentum {stats.fmt(mean_large['momentum'])}."
    )
    return {
        "setup": (
            f"The digits CNN for {cfg['epochs']} epochs at each batch size (so larger "
            f"batches take fewer steps), with a linear warmup over the first 20% of steps. "
            f"The rate is scaled from the batch-{BASE_BATCH} reference by (B/{BASE_BATCH}) "
            f"for SGD+momentum and LARS and by its square root for Ranger and Ranger-LARS."
        ),
        "table": {
            "columns": ["optimizer", *[f"batch {b}" for b in batches], f"mean, batch >= {LARGE}"],
            "rows": rows,
        },
        "verdict": stats.verdict(outcome, detail),
        "data": {"batches": batches, "test_acc": acc, "lr": lrs, "large_mean": mean_large},
    }


def plot(result: dict[str, Any], fig_dir: Path) -> list[str]:
    """Test accuracy against batch size, mean ± std over seeds."""
    fig, axes = plots.figure(1, 1, width=6)
    ax = axes[0, 0]
    batches = result["data"]["batches"]
    for name, per_batch in result["data"]["test_acc"].items():
        plots.band(ax, batches, np.asarray(per_batch).T, label(name), marker="o")
    ax.set(
        xscale="log",
        xlabel="batch size (log)",
        ylabel="final test accuracy",
        title="accuracy against batch size, lr scaled with the batch",
    )
    ax.legend()
    return [plots.save(fig, fig_dir, "large-batch.png")]
