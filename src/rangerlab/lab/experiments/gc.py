"""Gradient Centralization on and off, for four optimizers: test accuracy and train-test gap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import plots, stats
from ..optimizers import CNN_LR, label, make_gc_optimizer
from ..training import train_digits_config

ID = "gc"
TITLE = "Gradient Centralization"
DESCRIPTION = "Adam, RAdam, Ranger and SGD+momentum with and without GC: accuracy, train-test gap"
CLAIM = "Gradient Centralization improves generalization: higher test accuracy with GC."
OPTS = ["adam", "radam", "ranger", "momentum"]

CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {"subset": 256, "epochs": 1, "batch_size": 128},
    "quick": {"epochs": 4, "batch_size": 64},
    "full": {"epochs": 30, "batch_size": 64},
}


def run(cfg: dict[str, Any], seeds: list[int], bar) -> dict[str, Any]:
    """Train each optimizer with GC off and on (rangerlab's ``gc`` flag), once per seed."""
    bar.reset(total=len(OPTS) * 2 * len(seeds))
    acc: dict[str, dict[str, list[float]]] = {}
    gap: dict[str, dict[str, list[float]]] = {}
    for name in OPTS:
        acc[name], gap[name] = {}, {}
        for gc in (False, True):
            key = "gc" if gc else "plain"
            acc[name][key], gap[name][key] = [], []
            for seed in seeds:
                make = lambda p, n=name, g=gc: make_gc_optimizer(n, p, CNN_LR[n], g)  # noqa: E731
                r = train_digits_config(make, seed, cfg)
                acc[name][key].append(r["test_acc"][-1])
                gap[name][key].append(r["train_acc"] - r["test_acc"][-1])
                bar.update()
    rows, outcomes = [], []
    for name in OPTS:
        o = stats.compare(acc[name]["gc"], acc[name]["plain"])
        outcomes.append(o)
        rows.append(
            [
                label(name),
                stats.fmt(acc[name]["plain"]),
                stats.fmt(acc[name]["gc"]),
                stats.fmt(gap[name]["plain"]),
                stats.fmt(gap[name]["gc"]),
                {1: "better", -1: "worse", 0: "no reliable difference"}[o],
            ]
        )
    better = [label(n) for n, o in zip(OPTS, outcomes, strict=True) if o > 0]
    worse = [label(n) for n, o in zip(OPTS, outcomes, strict=True) if o < 0]
    detail = (
        f"With GC test accuracy was reliably higher for {len(better)} of {len(OPTS)} "
        f"optimizers ({', '.join(better) or 'none'}) and lower for {len(worse)} "
        f"({', '.join(worse) or 'none'}). Majority rule over optimizers."
    )
    return {
        "setup": (
            f"rangerlab's Adam, RAdam, Ranger and SGD(momentum=0.9) with gc=False and "
            f"gc=True, otherwise identical, on the digits CNN: {cfg['epochs']} epochs at "
            f"batch {cfg['batch_size']}. Gap = final train accuracy - test accuracy."
        ),
        "table": {
            "columns": [
                "optimizer",
                "test acc (no GC)",
                "test acc (GC)",
                "gap (no GC)",
                "gap (GC)",
                "GC effect",
            ],
            "rows": rows,
        },
        "verdict": stats.verdict(stats.tally(outcomes), detail),
        "data": {"test_acc": acc, "gap": gap},
    }


def plot(result: dict[str, Any], fig_dir: Path) -> list[str]:
    """Bars of test accuracy and train-test gap, with and without GC."""
    acc, gap = result["data"]["test_acc"], result["data"]["gap"]
    names = list(acc)
    fig, axes = plots.figure(2, 1, width=4.5)
    panels = ((axes[0, 0], acc, "test accuracy"), (axes[0, 1], gap, "train - test accuracy"))
    for ax, values, title in panels:
        plots.bars(
            ax,
            [label(n) for n in names],
            {"no GC": [values[n]["plain"] for n in names], "GC": [values[n]["gc"] for n in names]},
        )
        ax.set_title(title)
    lo = min(min(v) for n in names for v in acc[n].values())
    axes[0, 0].set_ylim(max(0.0, lo - 0.05), 1.0)
    axes[0, 0].legend()
    return [plots.save(fig, fig_dir, "gc.png")]
