"""Small pieces several experiment declarations share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import plots
from ..training import train_digits


def split_arm(arm: str) -> tuple[str, str]:
    """``"adam@0.01"`` -> ``("adam", "0.01")``."""
    name, _, value = arm.partition("@")
    return name, value


def digits(cfg: dict[str, Any], seed: int, build, **kw: Any) -> dict[str, Any]:
    """:func:`train_digits` with the config's split, steps, batch size and evaluation interval."""
    return train_digits(
        build,
        seed,
        cfg["split"],
        steps=cfg["steps"],
        batch_size=cfg["batch_size"],
        eval_every=cfg["eval_every"],
        **kw,
    )


def curves(
    result: dict[str, Any],
    arms: list[str],
    key: str,
    ylabel: str,
    fig_dir: Path,
    name: str,
    *,
    log: bool = False,
    title: str = "",
) -> str:
    """Each arm's ``curve[key]`` against steps (mean over seeds, min-max shaded)."""
    fig, axes = plots.figure(1, 1, width=6.5, height=3.8)
    ax = axes[0, 0]
    for i, arm in enumerate(arms):
        runs = result["runs"][arm]
        ys = [plots.positive(r["curve"][key]) if log else r["curve"][key] for r in runs]
        lr = result["tuning"].get(arm, {}).get("lr")
        text = result["labels"][arm] + (f" (tuned lr {lr:.2g})" if lr else "")
        plots.series(ax, runs[0]["curve"]["step"], ys, text, i)
    ax.set(xlabel="optimizer step", ylabel=ylabel, title=title, yscale="log" if log else "linear")
    ax.legend(fontsize=7)
    return plots.save(fig, fig_dir, name)


def interval_figure(result: dict[str, Any], fig_dir: Path, name: str) -> str:
    """The forest plot of the experiment's comparisons, one panel each."""
    n = len(result["comparisons"])
    fig, axes = plots.figure(1, n, width=8, height=1.45)
    plots.intervals(axes[:, 0], result["comparisons"])
    return plots.save(fig, fig_dir, name)
