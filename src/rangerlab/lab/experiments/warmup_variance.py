"""Adam's first updates with and without warmup, and RAdam's, as histograms per step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from .. import plots, stats
from ..data import load_digits
from ..models import DigitsCNN
from ..training import seed_everything

ID = "warmup-variance"
TITLE = "Warmup and the variance of Adam's first steps"
DESCRIPTION = "update-size histograms per step: Adam, Adam with linear warmup, RAdam"
CLAIM = (
    "Without warmup Adam's first updates are erratic and large: larger than with a linear "
    "warmup, and larger than RAdam's, which rectifies the variance without warmup."
)
LR = 3e-3
VARIANTS = {"adam": "Adam, no warmup", "adam-warmup": "Adam, linear warmup", "radam": "RAdam"}
BINS = np.linspace(-10.0, -1.0, 37)  # log10 |update| histogram edges

CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {"steps": 12, "record": 8, "warmup": 8, "batch_size": 64},
    "quick": {"steps": 100, "record": 30, "warmup": 30, "batch_size": 64},
    "full": {"steps": 600, "record": 100, "warmup": 200, "batch_size": 64},
}


def _train(variant: str, seed: int, cfg: dict[str, Any]) -> dict[str, Any]:
    """Train the digits CNN; record the loss every step and |update| of every weight for the
    first ``record`` steps (histogram counts, mean and spread of log10 |update|)."""
    data = load_digits()
    generator = seed_everything(seed)
    model = DigitsCNN()
    params = list(model.parameters())
    cls = torch.optim.RAdam if variant == "radam" else torch.optim.Adam
    opt = cls(params, lr=LR)
    n = len(data.y_train)
    losses, hist, mean_abs, log_std = [], [], [], []
    order = torch.randperm(n, generator=generator)
    for step in range(cfg["steps"]):
        if variant == "adam-warmup":
            opt.param_groups[0]["lr"] = LR * min(1.0, (step + 1) / cfg["warmup"])
        start = (step * cfg["batch_size"]) % n
        if start + cfg["batch_size"] > n:
            order = torch.randperm(n, generator=generator)
        idx = order[start : start + cfg["batch_size"]]
        before = [p.detach().clone() for p in params]
        loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step < cfg["record"]:
            moved = zip(params, before, strict=True)
            du = torch.cat([(p.detach() - b).abs().flatten() for p, b in moved])
            logs = du[du > 0].log10().numpy()
            hist.append(np.histogram(np.clip(logs, BINS[0], BINS[-1]), BINS)[0].tolist())
            mean_abs.append(du.mean().item())
            log_std.append(float(logs.std()))
    return {"loss": losses, "hist": hist, "mean_abs_update": mean_abs, "log_update_std": log_std}


def run(cfg: dict[str, Any], seeds: list[int], bar) -> dict[str, Any]:
    """Train each variant once per seed from the same initialisation and data order."""
    bar.reset(total=len(VARIANTS) * len(seeds))
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for variant in VARIANTS:
        for seed in seeds:
            runs[variant].append(_train(variant, seed, cfg))
            bar.update()
    early = {v: [float(np.mean(r["mean_abs_update"])) for r in rs] for v, rs in runs.items()}
    first = {v: [r["mean_abs_update"][0] for r in rs] for v, rs in runs.items()}
    final = {v: [float(np.mean(r["loss"][-10:])) for r in rs] for v, rs in runs.items()}
    rows = [
        [
            VARIANTS[v],
            stats.fmt(first[v]),
            stats.fmt(early[v]),
            stats.fmt([float(np.mean(r["log_update_std"])) for r in runs[v]]),
            stats.fmt(final[v]),
        ]
        for v in VARIANTS
    ]
    vs_warmup = stats.compare(early["adam"], early["adam-warmup"])
    vs_radam = stats.compare(early["adam"], early["radam"])
    outcome = -1 if -1 in (vs_warmup, vs_radam) else min(vs_warmup, vs_radam)
    detail = (
        f"Mean |update| over the first {cfg['record']} steps: Adam "
        f"{stats.fmt(early['adam'])}, "
        f"with warmup {stats.fmt(early['adam-warmup'])}, RAdam {stats.fmt(early['radam'])}. "
        f"Supported only if Adam's is reliably larger than both."
    )
    return {
        "setup": (
            f"The digits CNN, batch {cfg['batch_size']}, lr {LR}, betas (0.9, 0.999), "
            f"{cfg['steps']} steps: torch's Adam; Adam with the rate warmed up linearly over "
            f"{cfg['warmup']} steps; torch's RAdam. For each of the first {cfg['record']} "
            f"steps the histogram of log10 |update| over every weight, as in the RAdam "
            f"paper's figure."
        ),
        "table": {
            "columns": [
                "variant",
                "mean |update|, step 1",
                f"mean |update|, first {cfg['record']} steps",
                "std of log10 |update|",
                "final loss (last 10 steps)",
            ],
            "rows": rows,
        },
        "verdict": stats.verdict(outcome, detail),
        "data": {"bins": BINS.tolist(), "runs": runs, "early_mean_abs_update": early},
    }


def plot(result: dict[str, Any], fig_dir: Path) -> list[str]:
    """Histogram-per-step heatmaps (first seed) and the loss curves."""
    runs, bins = result["data"]["runs"], np.asarray(result["data"]["bins"])
    fig, axes = plots.figure(len(runs), 1, width=4, height=3.8)
    for ax, (v, rs) in zip(axes[0], runs.items(), strict=True):
        hist = np.asarray(rs[0]["hist"], dtype=float)
        ax.imshow(
            np.log1p(hist),
            aspect="auto",
            origin="lower",
            cmap="magma",
            extent=(bins[0], bins[-1], 0.5, len(hist) + 0.5),
        )
        ax.set(title=VARIANTS[v], xlabel="log10 |update|", ylabel="step")
        ax.grid(False)
    names = [plots.save(fig, fig_dir, "warmup-histograms.png")]
    fig, axes = plots.figure(1, 1, width=6)
    for v, rs in runs.items():
        steps = range(1, len(rs[0]["loss"]) + 1)
        plots.band(axes[0, 0], steps, [r["loss"] for r in rs], VARIANTS[v])
    axes[0, 0].set(xlabel="step", ylabel="training loss (batch)", yscale="log")
    axes[0, 0].legend()
    names.append(plots.save(fig, fig_dir, "warmup-loss.png"))
    return names
