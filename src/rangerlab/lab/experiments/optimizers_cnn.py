"""Eight optimizers train the same small CNN on the digits: accuracy and loss curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import plots, stats
from ..optimizers import CNN_LR, label, make_optimizer
from ..training import train_digits_config

ID = "optimizers-cnn"
TITLE = "Optimizers on a small CNN"
DESCRIPTION = "8 optimizers (SGD+momentum to Ranger-LARS) train a small CNN on the digits"
CLAIM = "Ranger suits CNNs: it reaches a higher test accuracy than Adam on the digits CNN."
OPTS = ["momentum", "adam", "adamw", "radam", "lookahead-adam", "ranger", "lars", "ranger-lars"]

CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {"subset": 256, "epochs": 1, "batch_size": 128},
    "quick": {"epochs": 4, "batch_size": 64},
    "full": {"epochs": 30, "batch_size": 64},
}


def run(cfg: dict[str, Any], seeds: list[int], bar) -> dict[str, Any]:
    """Train every optimizer at its reference rate, once per seed."""
    bar.reset(total=len(OPTS) * len(seeds))
    runs: dict[str, list[dict[str, Any]]] = {}
    for name in OPTS:
        runs[name] = []
        for seed in seeds:
            make = lambda p, n=name: make_optimizer(n, p, CNN_LR[n])  # noqa: E731
            runs[name].append(train_digits_config(make, seed, cfg))
            bar.update()
    final = {n: [r["test_acc"][-1] for r in rs] for n, rs in runs.items()}
    rows = [
        [
            label(n),
            f"{CNN_LR[n]:g}",
            stats.fmt(final[n]),
            stats.fmt([r["test_loss"][-1] for r in runs[n]]),
            stats.fmt([r["train_loss"][-1] for r in runs[n]]),
        ]
        for n in OPTS
    ]
    outcome = stats.compare(final["ranger"], final["adam"])
    detail = (
        f"Ranger's final test accuracy {stats.fmt(final['ranger'])} against Adam's "
        f"{stats.fmt(final['adam'])}."
    )
    return {
        "setup": (
            f"DigitsCNN (two 3x3 convs, 8 and 16 channels, then two linear layers) on "
            f"1,437 training / 360 test digits, {cfg['epochs']} epochs at batch "
            f"{cfg['batch_size']}, each optimizer at its reference learning rate. "
            f"Lookahead optimizers are evaluated on their slow weights."
        ),
        "table": {
            "columns": ["optimizer", "lr", "test accuracy", "test loss", "train loss"],
            "rows": rows,
        },
        "verdict": stats.verdict(outcome, detail),
        "data": {
            "runs": {
                n: [{k: r[k] for k in ("train_loss", "test_loss", "test_acc")} for r in rs]
                for n, rs in runs.items()
            }
        },
    }


def plot(result: dict[str, Any], fig_dir: Path) -> list[str]:
    """Test accuracy and training loss per epoch, mean ± std over seeds."""
    fig, axes = plots.figure(2, 1, width=5.5)
    for name, rs in result["data"]["runs"].items():
        epochs = range(1, len(rs[0]["test_acc"]) + 1)
        plots.band(axes[0, 0], epochs, [r["test_acc"] for r in rs], label(name))
        plots.band(axes[0, 1], epochs, [r["train_loss"] for r in rs], label(name))
    axes[0, 0].set(xlabel="epoch", ylabel="test accuracy", title="test accuracy")
    axes[0, 1].set(xlabel="epoch", ylabel="train loss", yscale="log", title="training loss")
    axes[0, 0].legend(fontsize=7)
    return [plots.save(fig, fig_dir, "optimizers-cnn.png")]
