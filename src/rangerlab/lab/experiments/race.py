"""The optimizer race: each optimizer descends four classic surfaces with its own tuned rate."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import plots, stats
from ..optimizers import label, make_optimizer
from ..surfaces import SURFACES

ID = "race"
TITLE = "The race to the minimum"
DESCRIPTION = "7 optimizers on Rosenbrock, Rastrigin, Beale and a saddle: paths, steps to minimum"
CLAIM = "Ranger reaches the minimum of these surfaces in fewer steps than SGD with momentum."
OPTS = ["sgd", "momentum", "adam", "radam", "ranger", "lars", "ranger-lars"]
TOL = 1e-2  # "at the minimum" means f - f_min < TOL from then on
BIG = 1e30  # a diverged run's final gap (JSON has no inf)

#: The lowest rate of each optimizer's search grid. Plain SGD steps scale with the gradient, the
#: Adam family's and Ranger-LARS's do not, and LARS's are also scaled by its trust coefficient.
GRID_LOW = {
    "sgd": 1e-5,
    "momentum": 1e-5,
    "adam": 1e-3,
    "radam": 1e-3,
    "ranger": 1e-3,
    "lars": 1e-1,
    "ranger-lars": 1e-3,
}

CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {"steps": 30, "decades": 4, "grid_points": 3, "path_points": 20},
    "quick": {"steps": 300, "decades": 4, "grid_points": 5, "path_points": 120},
    "full": {"steps": 1500, "decades": 5, "grid_points": 11, "path_points": 300},
}


def lr_grid(name: str, cfg: dict[str, Any]) -> list[float]:
    """Optimizer ``name``'s search grid: ``grid_points`` rates log-spaced over ``decades``."""
    low = GRID_LOW[name]
    return [
        float(v)
        for v in np.logspace(math.log10(low), math.log10(low) + cfg["decades"], cfg["grid_points"])
    ]


def _starts(surface, seeds: list[int]) -> torch.Tensor:
    """The nominal start, then one seeded perturbation of it per seed (float64, ``(1+S, 2)``)."""
    rows = [torch.tensor(surface.start, dtype=torch.float64)]
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(2, generator=g, dtype=torch.float64)
        if surface.name == "saddle":  # stay near the ridge: only the distance to it varies
            rows.append(rows[0] * torch.stack([1 + 0.05 * noise[0], 1 + 0.3 * noise[1].tanh()]))
        else:
            rows.append(rows[0] + 0.05 * noise)
    return torch.stack(rows)


def _race(name: str, surface, starts: torch.Tensor, lrs: list[float], steps: int):
    """Run every (lr, start) pair at once: one param group per rate, one tensor per start. Every
    optimizer here works per tensor (norms and trust ratios included) and the loss is a sum over
    points, so the runs do not interact. Returns the f trace ``(steps+1, L, S)`` and the
    positions ``(steps+1, L, S, 2)``."""
    points = [torch.nn.Parameter(s.clone()) for _ in lrs for s in starts]
    groups = [
        {"params": points[i * len(starts) : (i + 1) * len(starts)], "lr": lr}
        for i, lr in enumerate(lrs)
    ]
    opt = make_optimizer(name, groups, lrs[0])
    f_trace, pos = [], []
    for _ in range(steps + 1):
        xy = torch.stack(points)
        f = surface.f(xy)
        f_trace.append(f.detach().clone())
        pos.append(xy.detach().clone())
        opt.zero_grad()
        f.sum().backward()
        opt.step()
    shape = (steps + 1, len(lrs), len(starts))
    return torch.stack(f_trace).reshape(shape), torch.stack(pos).reshape(*shape, 2)


def _steps_to_min(gap: torch.Tensor) -> list[int | None]:
    """Per column, the first step from which ``gap < TOL`` holds to the end (the run has arrived
    and stays; passing through the minimum on the way elsewhere does not count); None if never."""
    inside = (gap < TOL) & torch.isfinite(gap)
    hit = inside.flip(0).long().cumprod(0).flip(0).bool()  # inside from this step to the end
    never = torch.full(hit.shape[1:], -1, dtype=torch.long)
    first = torch.where(hit.any(0), hit.long().argmax(0), never)
    return [int(v) if v >= 0 else None for v in first.tolist()]


def run(cfg: dict[str, Any], seeds: list[int], bar) -> dict[str, Any]:
    """Tune each optimizer's rate on each surface (nominal start), then race from seeded starts."""
    bar.reset(total=len(SURFACES) * len(OPTS))
    steps = cfg["steps"]
    data: dict[str, Any] = {"tol": TOL, "max_steps": steps, "surfaces": {}}
    rows, outcomes = [], []
    for sname, surface in SURFACES.items():
        starts = _starts(surface, seeds)
        per_opt: dict[str, Any] = {}
        for name in OPTS:
            lrs = lr_grid(name, cfg)
            f, pos = _race(name, surface, starts, lrs, steps)
            gap = f - surface.f_min
            hit = _steps_to_min(gap[:, :, 0])
            final = gap[-1, :, 0].nan_to_num(nan=math.inf)
            # Tuning: fewest steps to the minimum on the nominal start; else lowest final gap.
            key = [(h if h is not None else steps + 1, float(final[i])) for i, h in enumerate(hit)]
            best = min(range(len(lrs)), key=lambda i: key[i])
            seed_steps = _steps_to_min(gap[:, best, 1:])
            keep = np.unique(np.linspace(0, steps, cfg["path_points"]).astype(int))
            path = pos[keep, best, 1].nan_to_num(nan=0.0, posinf=1e6, neginf=-1e6)
            per_opt[name] = {
                "lr": lrs[best],
                "steps": seed_steps,
                "final_gap": [min(float(v), BIG) for v in gap[-1, best, 1:].nan_to_num(nan=BIG)],
                "path": path.tolist(),
            }
            censored = [s if s is not None else steps for s in seed_steps]
            reached = sum(s is not None for s in seed_steps)
            rows.append(
                [
                    sname,
                    label(name),
                    f"{lrs[best]:.2g}",
                    stats.fmt(censored) if reached else "not reached",
                    f"{reached}/{len(seeds)}",
                    f"{stats.mean(per_opt[name]['final_gap']):.2e}",
                ]
            )
            bar.update()
        data["surfaces"][sname] = per_opt
        ranger, momentum = (
            [s if s is not None else steps for s in per_opt[n]["steps"]]
            for n in ("ranger", "momentum")
        )
        # Fewer steps is better, so Ranger beating momentum is a reliably *smaller* count.
        outcomes.append((sname, -stats.compare(ranger, momentum)))
    wins = [s for s, o in outcomes if o > 0]
    losses = [s for s, o in outcomes if o < 0]
    detail = (
        f"Ranger was faster than SGD+momentum on {len(wins)} of {len(outcomes)} surfaces "
        f"({', '.join(wins) or 'none'}) and slower on {len(losses)} "
        f"({', '.join(losses) or 'none'}); runs that never reach the minimum count as "
        f"{steps} steps. Majority rule over surfaces."
    )
    return {
        "setup": (
            f"Each optimizer runs {steps} steps in float64 from a start perturbed per seed. "
            f"Its learning rate is picked per surface from a log grid of "
            f"{cfg['grid_points']} rates over {cfg['decades']} decades (from 1e-5 for SGD, "
            f"1e-3 for the Adam family and Ranger-LARS, 0.1 for LARS) by the fewest "
            f"steps to the minimum from the unperturbed start. Steps to minimum: the first "
            f"step from which f - f_min stays below {TOL} to the end of the run."
        ),
        "table": {
            "columns": [
                "surface",
                "optimizer",
                "tuned lr",
                "steps to minimum",
                "reached",
                "final f - f_min",
            ],
            "rows": rows,
        },
        "verdict": stats.verdict(stats.tally([o for _, o in outcomes]), detail),
        "data": data,
    }


def plot(result: dict[str, Any], fig_dir: Path) -> list[str]:
    """Contours of each surface with every optimizer's path (first seed)."""
    fig, axes = plots.figure(2, 2, width=5.2, height=4.2)
    for ax, (sname, per_opt) in zip(axes.flat, result["data"]["surfaces"].items(), strict=True):
        surface = SURFACES[sname]
        x0, x1, y0, y1 = surface.box
        gx, gy = np.meshgrid(np.linspace(x0, x1, 200), np.linspace(y0, y1, 200))
        z = surface.f(torch.from_numpy(np.stack([gx, gy], -1))).numpy() - surface.f_min
        ax.contour(gx, gy, np.log10(z + 1e-3), levels=25, colors="0.7", linewidths=0.6)
        for name, run_ in per_opt.items():
            path = np.asarray(run_["path"])
            ax.plot(
                path[:, 0],
                path[:, 1],
                lw=1.4,
                alpha=0.85,
                label=f"{label(name)} (lr {run_['lr']:.2g})",
            )
        ax.plot(*surface.minimum, "r*", ms=12)
        ax.plot(*surface.start, "ko", ms=4)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_title(sname)
        ax.grid(False)
        ax.legend(fontsize=6, loc="lower left", framealpha=0.9)
    return [plots.save(fig, fig_dir, "race.png")]
