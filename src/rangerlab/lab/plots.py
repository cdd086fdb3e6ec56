"""Figure helpers: a headless backend, one style, and curves no other curve can hide.

Every series gets a colour *and* a line style and marker (so overlapping curves stay visible and
the figures survive grey-scale printing). Spread is drawn as the min-max range over seeds, which
never leaves the data's range: on a log axis it cannot reach zero or below.
"""

from __future__ import annotations

import itertools
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


def intervals(ax, comparisons: list[dict[str, Any]]) -> None:
    """A forest plot: each comparison's mean paired difference and interval, its threshold, and
    arrows where an interval is unbounded (too few seeds)."""
    names = [("" if c["in_verdict"] else "(secondary) ") + c["name"] for c in comparisons]
    finite = [v for c in comparisons for v in (c["lo"], c["hi"], c["mean"]) if v is not None]
    finite += [c["threshold"] for c in comparisons]
    lo_all, hi_all = min(finite), max(finite)
    pad = 0.15 * (hi_all - lo_all or abs(hi_all) or 1.0)
    left, right = lo_all - pad, hi_all + pad
    colour = {"supported": "tab:green", "contradicted": "tab:red", "inconclusive": "0.4"}
    for y, c in enumerate(comparisons):
        lo = c["lo"] if c["lo"] is not None else left
        hi = c["hi"] if c["hi"] is not None else right
        col = colour.get(c["status"], "0.4")
        ax.plot([lo, hi], [y, y], color=col, lw=2.5, solid_capstyle="butt")
        ax.plot(c["mean"], y, "o", color=col, ms=6)
        ax.plot(c["threshold"], y, "|", color="k", ms=14, mew=1.5)
        for end, at in (("lo", left), ("hi", right)):
            if c[end] is None:
                arrow = {"arrowstyle": "->", "color": col}
                ax.annotate("", (at, y), (c["mean"], y), arrowprops=arrow)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(names)), [_wrap(n) for n in names])
    ax.invert_yaxis()
    ax.set_xlim(left, right)
    ax.set_xlabel("mean paired difference and its interval (| = threshold of the claim)")


def _wrap(text: str, width: int = 38) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if len(line) + len(w) > width and line:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    return "\n".join([*lines, line])


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


def pairs(items: Sequence[Any]) -> list[tuple[Any, Any]]:
    """All unordered pairs of ``items``."""
    return list(itertools.combinations(items, 2))
