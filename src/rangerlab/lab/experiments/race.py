"""The optimizer race on classic 2-D surfaces: an illustration, with many random starts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import plots
from ..optimizers import build, label
from ..protocol import Experiment
from ..surfaces import SURFACES

OPTS = ["sgd", "adam", "radam", "ranger", "lars", "ranger_lars"]
TOL = 1e-2  # "at the minimum": f - f_min < TOL from then on
#: The lowest rate of each optimizer's grid: SGD's step scales with the gradient, the Adam
#: family's and Ranger-LARS's do not, LARS's is scaled by its trust coefficient.
GRID_LOW = {
    "sgd": 1e-5,
    "adam": 1e-3,
    "radam": 1e-3,
    "ranger": 1e-3,
    "lars": 1e-1,
    "ranger_lars": 1e-3,
}

CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {"steps": 30, "decades": 4, "grid_points": 3, "starts": 3, "path_points": 20},
    "quick": {"steps": 250, "decades": 4, "grid_points": 5, "starts": 8, "path_points": 100},
    "full": {"steps": 500, "decades": 4, "grid_points": 7, "starts": 12, "path_points": 200},
}


def lr_grid(name: str, cfg: dict[str, Any]) -> list[float]:
    """``grid_points`` rates log-spaced over ``decades`` from the optimizer's lowest rate."""
    low = math.log10(GRID_LOW[name])
    return [float(v) for v in np.logspace(low, low + cfg["decades"], cfg["grid_points"])]


def starts(surface, n: int, seed: int) -> torch.Tensor:
    """``n`` random starts in the surface's plot box (float64); for the saddle, within 0.05 of
    its ridge (escaping it is the test there)."""
    g = torch.Generator().manual_seed(seed)
    x0, x1, y0, y1 = surface.box
    u = torch.rand(n, 2, generator=g, dtype=torch.float64)
    xy = torch.stack([x0 + (x1 - x0) * u[:, 0], y0 + (y1 - y0) * u[:, 1]], 1)
    if surface.name == "saddle":
        xy[:, 1] = 0.05 * (2 * u[:, 1] - 1)
    return xy


def race(name: str, surface, points: torch.Tensor, lrs: list[float], steps: int):
    """Every (rate, start) at once: one param group per rate, one tensor per start (every
    optimizer here works per tensor, trust ratios included, and the loss is a sum, so runs do
    not interact). Returns f - f_min ``(steps+1, rates, starts)`` and positions."""
    params = [torch.nn.Parameter(s.clone()) for _ in lrs for s in points]
    n = len(points)
    groups = [{"params": params[i * n : (i + 1) * n], "lr": lr} for i, lr in enumerate(lrs)]
    opt = build(name, groups, lrs[0])
    gaps, pos = [], []
    for _ in range(steps + 1):
        xy = torch.stack(params)
        f = surface.f(xy)
        gaps.append(f.detach() - surface.f_min)
        pos.append(xy.detach().clone())
        opt.zero_grad()
        f.sum().backward()
        opt.step()
    shape = (steps + 1, len(lrs), n)
    return torch.stack(gaps).reshape(shape), torch.stack(pos).reshape(*shape, 2)


def steps_to_min(gap: torch.Tensor) -> list[int | None]:
    """Per column, the first step from which ``gap < TOL`` holds to the end (arrived and stays;
    passing through on the way elsewhere does not count); None if never."""
    inside = (gap < TOL) & torch.isfinite(gap)
    hit = inside.flip(0).long().cumprod(0).flip(0).bool()
    never = torch.full(hit.shape[1:], -1, dtype=torch.long)
    first = torch.where(hit.any(0), hit.long().argmax(0), never)
    return [int(v) if v >= 0 else None for v in first.tolist()]


def _score(hits: list[int | None], steps: int) -> tuple[float, float]:
    reached = [h for h in hits if h is not None]
    return len(reached) / len(hits), float(np.median(reached)) if reached else float(steps + 1)


def trial(cfg: dict[str, Any], arm: str, seed: int) -> dict[str, Any]:
    """Per surface: tune the rate on separate starts (seed + 1000), then race from fresh
    starts; success rate and median steps of the successful runs."""
    out: dict[str, Any] = {}
    for sname, surface in SURFACES.items():
        lrs = lr_grid(arm, cfg)
        gap, _ = race(arm, surface, starts(surface, cfg["starts"], seed + 1000), lrs, cfg["steps"])
        scores = [_score(steps_to_min(gap[:, i]), cfg["steps"]) for i in range(len(lrs))]
        best = max(range(len(lrs)), key=lambda i: (scores[i][0], -scores[i][1]))
        gap, pos = race(
            arm, surface, starts(surface, cfg["starts"], seed), [lrs[best]], cfg["steps"]
        )
        rate, median = _score(steps_to_min(gap[:, 0]), cfg["steps"])
        out[f"success {sname}"] = rate
        out[f"median steps {sname}"] = median
        out[f"lr {sname}"] = lrs[best]
        keep = np.unique(np.linspace(0, cfg["steps"], cfg["path_points"]).astype(int))
        path = pos[keep, 0, 0].nan_to_num(nan=0.0, posinf=1e6, neginf=-1e6)
        out[f"path {sname}"] = path.tolist()
    return out


def setup(cfg: dict[str, Any]) -> str:
    """The setup paragraph."""
    return (
        f"Each optimizer runs {cfg['steps']} steps in float64 from {cfg['starts']} random "
        f"starts per seed in each surface's box. Its rate is chosen per surface from "
        f"{cfg['grid_points']} log-spaced rates over {cfg['decades']} decades (from "
        f"{GRID_LOW}) by the success rate, then the median steps, on a separate set of random "
        f"starts. Success: f - f_min stays below {TOL} from some step to the end; steps: the "
        f"median over successful runs ({cfg['steps'] + 1} when none succeed)."
    )


def success_table(result: dict[str, Any]) -> dict[str, Any]:
    """Success rate and median steps per surface and optimizer, pooled over seeds."""
    rows = []
    for sname in SURFACES:
        for arm in OPTS:
            rs = result["runs"][arm]
            rate = np.mean([r[f"success {sname}"] for r in rs])
            med = np.median([r[f"median steps {sname}"] for r in rs])
            lrs = sorted({f"{r[f'lr {sname}']:.2g}" for r in rs})
            rows.append([sname, label(arm), ", ".join(lrs), f"{rate:.0%}", f"{med:.0f}"])
    return {
        "title": "Success rate over all starts and the median (over seeds) of median steps "
        "to the minimum; tuned rates",
        "columns": ["surface", "optimizer", "tuned lr", "success", "median steps"],
        "rows": rows,
    }


def plot(result: dict[str, Any], fig_dir: Path) -> list[str]:
    """Contours of each surface with every optimizer's path from seed 0's first start."""
    fig, axes = plots.figure(2, 2, width=5.2, height=4.2)
    for ax, (sname, surface) in zip(axes.flat, SURFACES.items(), strict=True):
        x0, x1, y0, y1 = surface.box
        gx, gy = np.meshgrid(np.linspace(x0, x1, 200), np.linspace(y0, y1, 200))
        z = surface.f(torch.from_numpy(np.stack([gx, gy], -1))).numpy() - surface.f_min
        ax.contour(gx, gy, np.log10(z + 1e-3), levels=25, colors="0.75", linewidths=0.6)
        for i, arm in enumerate(OPTS):
            path = np.asarray(result["runs"][arm][0][f"path {sname}"])
            st = plots.style(i)
            ax.plot(
                path[:, 0], path[:, 1], lw=1.4, alpha=0.9, markevery=[0], label=label(arm), **st
            )
        ax.plot(*surface.minimum, "r*", ms=12)
        ax.set(xlim=(x0, x1), ylim=(y0, y1), title=sname)
        ax.grid(False)
        ax.legend(fontsize=6, loc="lower left", framealpha=0.9)
    return [plots.save(fig, fig_dir, "race.png")]


EXPERIMENT = Experiment(
    id="race",
    title="The race to the minimum (an illustration)",
    description="6 optimizers on Rosenbrock, Rastrigin, Beale and a saddle, many random starts",
    claim=(
        '"Different optimizers need different times to reach the low point ... local minima ... '
        'saddle points." An illustration of that sentence, not a test: the lecture makes no '
        "claim about which optimizer wins on these surfaces."
    ),
    claim_zh="不同的優化器走到低點所需的時間都不同 Local Minima ... 鞍點",
    arms=lambda cfg: list(OPTS),
    metrics={f"success {s}": f"share of starts reaching the minimum on {s}" for s in SURFACES},
    comparisons=lambda cfg: [],
    trial=trial,
    configs=CONFIGS,
    seeds={"tiny": 1, "quick": 2, "full": 3},
    setup=setup,
    shows="How each optimizer, at its tuned rate, moves on four classic surfaces.",
    cannot_show=(
        "2-D surfaces say little about training networks (no noise, no high dimension, no "
        "generalization); it carries no verdict."
    ),
    plot=plot,
    tables=lambda result: [success_table(result)],
    labels={o: label(o) for o in OPTS},
)
