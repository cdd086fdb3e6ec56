"""Figure helpers for the experiments: a headless backend, one style, mean-and-spread bands."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # the lab runs headless; never open a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

plt.rcParams.update({"figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3, "font.size": 9})


def figure(ncols: int = 1, nrows: int = 1, width: float = 5.0, height: float = 3.6):
    """A new figure with a grid of axes (always a 2-D array) sized per panel."""
    return plt.subplots(
        nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, layout="constrained"
    )


def save(fig, fig_dir: Path, name: str) -> str:
    """Write ``fig`` as ``fig_dir/name`` (PNG), close it, and return ``name``."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(fig_dir / name)
    plt.close(fig)
    return name


def band(ax, x: Sequence[float], runs: Sequence[Sequence[float]], label: str, **kw) -> None:
    """Plot the mean of ``runs`` (one curve per seed) with a shaded mean ± std band."""
    arr = np.asarray(runs, dtype=float)
    mean = arr.mean(axis=0)
    (line,) = ax.plot(x, mean, label=label, **kw)
    if len(arr) > 1:
        std = arr.std(axis=0, ddof=1)
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)


def bars(ax, labels: Sequence[str], groups: dict[str, Sequence[Sequence[float]]]) -> None:
    """Grouped bars: one group per label, one bar per key of ``groups`` (mean, std error bars)."""
    width = 0.8 / max(len(groups), 1)
    x = np.arange(len(labels))
    for i, (name, per_label) in enumerate(groups.items()):
        means = [float(np.mean(v)) for v in per_label]
        stds = [float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in per_label]
        ax.bar(
            x + (i - (len(groups) - 1) / 2) * width, means, width, yerr=stds, label=name, capsize=2
        )
    ax.set_xticks(x, labels, rotation=20, ha="right")
