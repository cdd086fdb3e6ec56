"""``rangerlab.plot_telemetry``: the layer x step picture of a telemetry quantity."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def telemetry_matrix(
    records: Sequence[dict[str, float]], quantity: str
) -> tuple[list[str], list[float], list[list[float]]]:
    """``(layers, steps, values)`` of ``quantity``: ``values[i][j]`` is layer i at record j (nan
    where not recorded). Records are telemetry dicts with a ``step`` key (the loggers' records)."""
    prefix = quantity + "/"
    layers: list[str] = []
    for record in records:
        for key in record:
            if key.startswith(prefix) and key[len(prefix) :] not in layers:
                layers.append(key[len(prefix) :])
    if not layers:
        known = sorted({k.split("/")[0] for r in records for k in r if "/" in k})
        raise ValueError(f"Invalid quantity: {quantity!r} is in no record; recorded: {known}")
    steps = [float(r.get("step", i)) for i, r in enumerate(records)]
    values = [[float(r.get(prefix + layer, math.nan)) for r in records] for layer in layers]
    return layers, steps, values


def plot_telemetry(
    records: Sequence[dict[str, float]],
    quantity: str = "update_ratio",
    *,
    log: bool = True,
    first_steps: int = 0,
    ax: Any = None,
) -> Any:
    """Draw a layer x step heatmap of ``quantity`` with a colour bar; return the figure.

    With ``first_steps > 0`` a second panel shows the coefficient of variation of the adaptive
    step (``adaptive_lr_cv``) per layer over the first ``first_steps`` records: Adam's erratic
    early steps, which warmup and RAdam's rectifier address.

    Args:
        records: telemetry dicts with a ``step`` key (e.g. ``callback.records``, or
            ``{"step": i, **opt.telemetry()}`` collected in a loop).
        quantity: a telemetry quantity, e.g. ``"trust_ratio"`` (see `rangerlab.telemetry`).
        log: colour by ``log10`` of the value (the quantities span decades between layers).
        first_steps: records in the adaptive-lr panel (0: no panel).
        ax: a matplotlib axes to draw the heatmap on (ignored with ``first_steps``).

    matplotlib is imported here only, so ``import rangerlab`` does not need it.

    Examples:
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> import torch
        >>> import rangerlab
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 1))
        >>> opt = rangerlab.create_optimizer(model, "lars", lr=0.1, telemetry=True)
        >>> records = []
        >>> for step in range(3):
        ...     opt.zero_grad()
        ...     model(torch.randn(16, 4)).pow(2).mean().backward()
        ...     _ = opt.step()
        ...     records.append({"step": step, **opt.telemetry()})
        >>> "trust_ratio/0.weight" in records[0]
        True
        >>> fig = rangerlab.plot_telemetry(records, "trust_ratio")
        >>> type(fig).__name__
        'Figure'
    """
    import matplotlib.pyplot as plt
    import numpy as np

    layers, steps, values = telemetry_matrix(records, quantity)
    data = np.array(values, dtype=float)
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            data = np.log10(np.where(data > 0, data, np.nan))
    if first_steps:
        fig, (ax, side) = plt.subplots(
            1, 2, figsize=(11, 0.3 * len(layers) + 2), gridspec_kw={"width_ratios": [3, 2]}
        )
    elif ax is None:
        fig, ax = plt.subplots(figsize=(8, 0.3 * len(layers) + 2))
    else:
        fig = ax.figure
    edges = np.arange(len(steps) + 1) - 0.5
    mesh = ax.pcolormesh(edges, np.arange(len(layers) + 1) - 0.5, data, cmap="viridis")
    ticks = np.linspace(0, len(steps) - 1, min(len(steps), 8)).round().astype(int)
    ax.set_xticks(ticks, [f"{steps[i]:g}" for i in ticks])
    ax.set_yticks(range(len(layers)), layers, fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="step", title=quantity)
    fig.colorbar(mesh, ax=ax, label=f"log10 {quantity}" if log else quantity)
    if first_steps:
        names, _, cvs = telemetry_matrix(records[:first_steps], "adaptive_lr_cv")
        for name, row in zip(names, cvs):
            side.plot(steps[:first_steps], row, lw=1, label=name)
        side.set(xlabel="step", ylabel="CV of 1/(sqrt(v_hat)+eps)", yscale="log",
                 title="adaptive-lr variation, first steps")  # fmt: skip
        side.legend(fontsize=6, ncols=2)
    fig.tight_layout()
    return fig
