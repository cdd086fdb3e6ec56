"""Large batches: SGD+momentum against LARS (and Ranger against Ranger-LARS), every batch size
with its own tuned rate and a warmup, a fixed number of epochs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import plots
from ..data import digits_split
from ..optimizers import build, grid, label
from ..protocol import Comparison, Experiment, Tuning
from ..training import train_digits, warmup
from ._common import split_arm

WARMUP_FRACTION = 0.1

CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {"opts": ["sgd", "lars"], "batches": [32, 128], "epochs": 1, "grid_points": 2},
    "quick": {"opts": ["sgd", "lars"], "batches": [32, 256], "epochs": 8, "grid_points": 3},
    "full": {
        "opts": ["sgd", "lars", "ranger", "ranger_lars"],
        "batches": [16, 64, 256],
        "epochs": 15,
        "grid_points": 3,
    },
}


def steps_for(cfg: dict[str, Any], batch: int) -> int:
    """Steps of ``epochs`` epochs at ``batch`` (the last incomplete batch of an epoch dropped)."""
    return cfg["epochs"] * (len(digits_split("test").y_train) // batch)


def arms(cfg: dict[str, Any]) -> list[str]:
    """``"<optimizer>@<batch>"`` for every optimizer and batch size."""
    return [f"{o}@{b}" for o in cfg["opts"] for b in cfg["batches"]]


def trial(cfg: dict[str, Any], arm: str, seed: int) -> dict[str, Any]:
    """Train the digits CNN at one batch size, warmup over the first 10% of steps."""
    opt, batch = split_arm(arm)
    steps = steps_for(cfg, int(batch))
    r = train_digits(
        lambda m: build(opt, m, cfg["lr"]),
        seed,
        cfg["split"],
        steps=steps,
        batch_size=int(batch),
        eval_every=max(1, steps // 4),
        lr_factor=warmup(max(1, round(WARMUP_FRACTION * steps))),
    )
    return {k: r[k] for k in ("acc", "loss", "curve")}


def lr_grid(cfg: dict[str, Any], arm: str) -> list[float]:
    """The optimizer's half-decade grid, scaled for the batch by the rule each family uses
    (linear for SGD and LARS, square root for Adam-style steps; Goyal et al. 2017, Hoffer et
    al. 2017) relative to batch 64: the grid moves with the batch, its shape does not."""
    opt, batch = split_arm(arm)
    power = 1.0 if opt in ("sgd", "lars") else 0.5
    return [lr * (int(batch) / 64) ** power for lr in grid(opt, cfg["grid_points"])]


def _drop(m: dict[str, Any], opt: str, cfg: dict[str, Any]) -> float:
    small, large = cfg["batches"][0], cfg["batches"][-1]
    return m[f"{opt}@{large}"]["acc"] - m[f"{opt}@{small}"]["acc"]


def comparisons(cfg: dict[str, Any]) -> list[Comparison]:
    """Voting: LARS loses less accuracy from the smallest to the largest batch than SGD."""
    small, large = cfg["batches"][0], cfg["batches"][-1]
    out = [
        Comparison(
            f"accuracy change from batch {small} to {large}: LARS - SGD+momentum",
            lambda m: _drop(m, "lars", cfg) - _drop(m, "sgd", cfg),
            +1,
            unit="(accuracy)",
        ),
        Comparison(
            f"test accuracy at batch {large}: LARS - SGD+momentum",
            lambda m: m[f"lars@{large}"]["acc"] - m[f"sgd@{large}"]["acc"],
            +1,
            unit="(accuracy)",
            in_verdict=False,
        ),
    ]
    if "ranger_lars" in cfg["opts"]:
        out.append(
            Comparison(
                f"test accuracy at batch {large}: Ranger-LARS - Ranger",
                lambda m: m[f"ranger_lars@{large}"]["acc"] - m[f"ranger@{large}"]["acc"],
                +1,
                unit="(accuracy)",
                in_verdict=False,
            )
        )
    return out


def setup(cfg: dict[str, Any]) -> str:
    """The setup paragraph."""
    steps = {b: steps_for(cfg, b) for b in cfg["batches"]}
    return (
        f"The digits CNN (width 8), {cfg['epochs']} epochs of the 1,149 training images at "
        f"each batch size {cfg['batches']} (steps: {steps}; the largest batch is "
        f"{cfg['batches'][-1] / 1149:.0%} of the data), so larger batches take fewer steps, as "
        f"in large-batch training. Every (optimizer, batch) has its own rate, tuned on the "
        f"validation split over {cfg['grid_points']} half-decade points (the grid shifted by the "
        f"usual batch scaling rule; grown past an end while the best rate sits there, at most "
        f"twice), with a linear warmup over the first 10% of steps. "
        f"Optimizers: {[label(o) for o in cfg['opts']]}; Ranger arms (Lookahead k=6) sync "
        f"{steps[cfg['batches'][-1]] // 6}+ times and are scored on their slow weights."
    )


def plot(result: dict[str, Any], fig_dir: Path) -> list[str]:
    """Test accuracy against batch size."""
    cfg, runs = result["config"], result["runs"]
    fig, axes = plots.figure(1, 1, width=6.5, height=3.8)
    values = {
        o: [[r["acc"] for r in runs[f"{o}@{b}"]] for b in cfg["batches"]] for o in cfg["opts"]
    }
    plots.by_arm(axes[0, 0], cfg["batches"], values, {o: label(o) for o in cfg["opts"]})
    axes[0, 0].set(
        xscale="log",
        xlabel="batch size (log; fixed epochs, so fewer steps)",
        ylabel="final test accuracy",
        title="tuned rate per batch size",
    )
    axes[0, 0].legend(fontsize=7)
    return [plots.save(fig, fig_dir, "large-batch.png")]


EXPERIMENT = Experiment(
    id="large-batch",
    title="Large batches: SGD+momentum vs LARS",
    description="test accuracy against batch size, rates tuned per batch with warmup",
    claim=(
        '"In the past, once the batch grew past a point, results got worse and worse ... '
        'LARS (Layer-wise Adaptive Rate Scaling) suits applications that need large batches." '
        "Tested: with rates tuned per batch size, LARS loses less accuracy than SGD+momentum "
        "going from the smallest to the largest batch."
    ),
    claim_zh=(
        "在過去,發現batch數量大到一個程度後,效果越來越差 ... 適用需要大batch的應用(Ex: SimCLR)"
    ),
    arms=arms,
    metrics={"acc": "test accuracy (fraction)", "loss": "test cross-entropy (nats)"},
    comparisons=comparisons,
    trial=trial,
    configs=CONFIGS,
    seeds={"tiny": 2, "quick": 6, "full": 8},
    setup=setup,
    shows=(
        "Whether SGD+momentum degrades with batch size on this problem when its rate is "
        "re-tuned for every batch, and whether LARS degrades less."
    ),
    cannot_show=(
        "The 'large' batch here is 256 images (22% of a small dataset), not the 8k-32k of the "
        "LARS paper; effects that only appear at that scale, or with BN and long schedules, "
        "cannot show up. A fixed epoch budget means large batches also get fewer steps."
    ),
    plot=plot,
    tuning=Tuning(
        grid=lr_grid, metric="loss", direction=-1, seeds={"tiny": 1, "quick": 1, "full": 1}
    ),
    labels={
        f"{o}@{b}": f"{label(o)}, batch {b}"
        for c in CONFIGS.values()
        for o in c["opts"]
        for b in c["batches"]
    },
)
