"""Figure helpers: a headless backend, one style, and curves no other curve can hide.

Every series gets a colour *and* a line style and marker (so overlapping curves stay visible and
the figures survive grey-scale printing). Spread is drawn as the min-max range over seeds, which
never leaves the data's range: on a log axis it cannot reach zero or below.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # the lab runs headless; never open a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

plt.rcParams.update({"figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3, "font.size": 9})

COLOURS = plt.get_cmap("tab10").colors
LINES = ["-", "--", "-.", ":"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "h"]


def style(i: int) -> dict[str, Any]:
    """The ``i``-th series' colour, line style and marker (all three differ between neighbours)."""
    return {
        "color": COLOURS[i % len(COLOURS)],
        "ls": LINES[i % len(LINES)],
        "marker": MARKERS[i % len(MARKERS)],
    }


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


def series(ax, x: Sequence[float], runs: Sequence[Sequence[float]], label: str, i: int) -> None:
    """The mean over seeds of ``runs`` (one row per seed) against ``x``, with the min-max range
    over seeds shaded."""
    arr = np.asarray(runs, dtype=float)
    st = style(i)
    ax.plot(x, arr.mean(axis=0), label=label, markersize=4, markevery=max(1, len(x) // 8), **st)
    if len(arr) > 1:
        ax.fill_between(x, arr.min(axis=0), arr.max(axis=0), color=st["color"], alpha=0.15, lw=0)


def intervals(axes, comparisons: list[dict[str, Any]]) -> None:
    """A forest plot, one panel per comparison (each with its own units and x-axis): the mean
    paired difference (dot), its interval (bar; arrows where unbounded because of too few
    seeds), the claim's threshold (black tick) and 0 (thin line)."""
    colour = {"supported": "tab:green", "contradicted": "tab:red", "inconclusive": "0.45"}
    for ax, c in zip(axes, comparisons, strict=True):
        ends = [v for v in (c["lo"], c["hi"], c["mean"], c["threshold"], 0.0) if v is not None]
        ends += list(c["differences"])
        lo_all, hi_all = min(ends), max(ends)
        pad = 0.1 * (hi_all - lo_all or abs(hi_all) or 1.0)
        left, right = lo_all - pad, hi_all + pad
        col = colour.get(c["status"], "0.45")
        lo = c["lo"] if c["lo"] is not None else left
        hi = c["hi"] if c["hi"] is not None else right
        ax.plot([lo, hi], [0, 0], color=col, lw=4, solid_capstyle="butt")
        ax.plot(c["differences"], [0.25] * len(c["differences"]), "|", color="0.3", ms=8)
        ax.plot(c["mean"], 0, "o", color=col, ms=8, mec="k")
        ax.plot(c["threshold"], 0, "|", color="k", ms=22, mew=2)
        for end, at in (("lo", left), ("hi", right)):
            if c[end] is None:
                arrow = {"arrowstyle": "->", "color": col, "lw": 2}
                ax.annotate("", (at, 0), (c["mean"], 0), arrowprops=arrow)
        ax.axvline(0, color="k", lw=0.6)
        ax.set(xlim=(left, right), ylim=(-0.5, 0.5), yticks=[])
        secondary = "" if c["in_verdict"] else " (secondary)"
        ax.set_title(
            f"{c['name']}{secondary}: {c['status']} ({c['level']:.1%} interval)",
            fontsize=8,
            loc="left",
        )
        ax.set_xlabel(f"paired difference {c['unit']}; ticks above: single seeds", fontsize=7)


def by_arm(
    ax, xs: Sequence[float], values: dict[str, Sequence[Sequence[float]]], labels: dict[str, str]
) -> None:
    """One line per group: mean over seeds against ``xs`` with the min-max range shaded;
    ``values[group][j]`` holds the per-seed values at ``xs[j]``."""
    for i, (group, per_x) in enumerate(values.items()):
        series(ax, xs, np.asarray(per_x, dtype=float).T, labels.get(group, group), i)


def positive(values: Sequence[float]) -> list[float]:
    """``values`` with non-positive entries as NaN (a log axis then leaves a gap, not a spike)."""
    return [v if v > 0 and math.isfinite(v) else math.nan for v in values]
