"""Mixed precision: fp32 against bf16 autocast (and fp16 with GradScaler on CUDA), and the
fp16 underflow picture with and without loss scaling."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from ... import Adam
from ...amp import scaler_step
from .. import plots, stats
from ..data import load_digits
from ..models import DigitsCNN
from ..training import seed_everything

ID = "amp"
TITLE = "Automatic mixed precision"
DESCRIPTION = "fp32 vs bf16 autocast (fp16+GradScaler on CUDA): time, memory, loss; fp16 underflow"
CLAIM = (
    "Mixed precision saves time and memory: a bf16-autocast step is faster and keeps less "
    "memory for the backward pass than an fp32 step."
)
FP16_MIN_NORMAL = 2.0**-14
FP16_MIN_SUBNORMAL = 2.0**-24
SCALE = 2.0**16  # torch.amp.GradScaler's initial scale
LOG2_BINS = np.arange(-50, 5)

CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {"steps": 8, "batch_size": 64, "width": 8},
    "quick": {"steps": 25, "batch_size": 256, "width": 16},
    "full": {"steps": 100, "batch_size": 256, "width": 16},
}


def modes() -> list[tuple[str, str, torch.dtype | None]]:
    """(name, device, autocast dtype) of every precision this machine can run."""
    out = [("fp32 (cpu)", "cpu", None), ("bf16 autocast (cpu)", "cpu", torch.bfloat16)]
    if torch.cuda.is_available():
        out += [("fp32 (cuda)", "cuda", None), ("fp16 + GradScaler (cuda)", "cuda", torch.float16)]
    return out


def saved_bytes(model: torch.nn.Module, x: torch.Tensor, device: str, dtype) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of one forward (activation
    memory, the part autocast shrinks)."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast(device, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            model(x).sum()
    return total


def _train(device: str, dtype, seed: int, cfg: dict[str, Any]) -> dict[str, Any]:
    data = load_digits()
    generator = seed_everything(seed)
    model = DigitsCNN(cfg["width"]).to(device)
    opt = Adam(model.parameters(), lr=3e-3)
    scaler = torch.amp.GradScaler(device, enabled=dtype == torch.float16)
    x_all, y_all = data.x_train.to(device), data.y_train.to(device)
    times, losses, skipped = [], [], 0
    for _ in range(cfg["steps"]):
        idx = torch.randint(0, len(y_all), (cfg["batch_size"],), generator=generator).to(device)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
        opt.zero_grad()
        scaler.scale(loss).backward()
        skipped += not scaler_step(scaler, opt)  # fp16: steps the scaler skips on overflow
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    warm = min(5, len(times) - 1)  # the first steps pay one-off costs
    return {
        "ms_per_step": 1e3 * statistics.median(times[warm:]),
        "saved_bytes": saved_bytes(model, x_all[: cfg["batch_size"]], device, dtype),
        "final_loss": float(np.mean(losses[-10:])),
        "steps_skipped": skipped,
        "model": model,
    }


def underflow(model: torch.nn.Module, batches: int = 4, batch_size: int = 64) -> dict[str, Any]:
    """Gradient magnitudes of a trained fp32 model against fp16's range: the log2 histogram and
    the fraction of non-zero entries that fp16 flushes to zero, without and with loss scaling."""
    data = load_digits()
    model = model.cpu().float()
    grads = []
    for b in range(batches):
        sl = slice(b * batch_size, (b + 1) * batch_size)
        model.zero_grad()
        F.cross_entropy(model(data.x_test[sl]), data.y_test[sl]).backward()
        grads += [p.grad.flatten().clone() for p in model.parameters()]
    g = torch.cat(grads).double()
    g = g[g != 0]
    hist = np.histogram(np.log2(g.abs().numpy()), LOG2_BINS)[0].tolist()
    return {
        "log2_bins": LOG2_BINS.tolist(),
        "hist": hist,
        "entries": int(g.numel()),
        **fp16_fractions(g),
    }


def fp16_fractions(g: torch.Tensor, scale: float = SCALE) -> dict[str, float]:
    """Fractions of the non-zero entries of ``g`` that fp16 flushes to zero (``flushed``), holds
    only as subnormals (``subnormal``), and, after multiplying by ``scale``, flushes
    (``flushed_scaled``) or overflows to inf (``overflow_scaled``)."""
    g = g.double()
    g = g[g != 0]
    if g.numel() == 0:
        raise ValueError("fp16_fractions needs at least one non-zero entry")
    frac = lambda mask: mask.double().mean().item()  # noqa: E731
    return {
        "flushed": frac(g.half() == 0),
        "subnormal": frac((g.abs() < FP16_MIN_NORMAL) & (g.half() != 0)),
        "flushed_scaled": frac((g * scale).half() == 0),
        "overflow_scaled": frac(torch.isinf((g * scale).half())),
    }


def run(cfg: dict[str, Any], seeds: list[int], bar) -> dict[str, Any]:
    """Time the same training in every precision, once per seed; then the underflow picture."""
    todo = modes()
    bar.reset(total=len(todo) * len(seeds))
    results: dict[str, dict[str, list[float]]] = {}
    trained = None
    for name, device, dtype in todo:
        results[name] = {"ms_per_step": [], "saved_mb": [], "final_loss": [], "steps_skipped": []}
        for seed in seeds:
            r = _train(device, dtype, seed, cfg)
            results[name]["ms_per_step"].append(r["ms_per_step"])
            results[name]["saved_mb"].append(r["saved_bytes"] / 2**20)
            results[name]["final_loss"].append(r["final_loss"])
            results[name]["steps_skipped"].append(r["steps_skipped"])
            if trained is None:
                trained = r["model"]
            bar.update()
    under = underflow(trained)
    rows = [
        [
            n,
            stats.fmt(v["ms_per_step"]),
            stats.fmt(v["saved_mb"]),
            stats.fmt(v["final_loss"]),
            stats.fmt(v["steps_skipped"]),
        ]
        for n, v in results.items()
    ]
    fp32, bf16 = results["fp32 (cpu)"], results["bf16 autocast (cpu)"]
    faster = -stats.compare(bf16["ms_per_step"], fp32["ms_per_step"])
    smaller = -stats.compare(bf16["saved_mb"], fp32["saved_mb"])
    outcome = -1 if -1 in (faster, smaller) else min(faster, smaller)
    word = {1: "reliably lower", -1: "reliably higher", 0: "not reliably different"}
    detail = (
        f"On CPU, bf16 autocast time per step was {word[faster]} "
        f"({stats.fmt(bf16['ms_per_step'])} ms vs {stats.fmt(fp32['ms_per_step'])} ms) and "
        f"activation memory {word[smaller]} ({stats.fmt(bf16['saved_mb'])} MiB vs "
        f"{stats.fmt(fp32['saved_mb'])} MiB). Both must be lower for support. Underflow: "
        f"{under['flushed']:.2%} of gradient entries flush to zero in fp16 without loss "
        f"scaling, {under['flushed_scaled']:.2%} with a scale of 2^16 "
        f"({under['overflow_scaled']:.2%} overflow)."
    )
    return {
        "setup": (
            f"The digits CNN (width {cfg['width']}) with rangerlab.Adam stepped through "
            f"rangerlab.amp.scaler_step (it counts the steps a GradScaler skips on overflow), "
            f"{cfg['steps']} steps at batch "
            f"{cfg['batch_size']}, in each precision; time is the median step after 5 "
            f"warm-up steps, memory is the bytes autograd saves for backward in one forward "
            f"pass. Underflow: the gradients of the trained fp32 model on 4 test batches, "
            f"compared with fp16's smallest normal (2^-14) and subnormal (2^-24) numbers."
        ),
        "table": {
            "columns": [
                "precision",
                "ms per step",
                "activation memory (MiB)",
                "final loss",
                "steps skipped",
            ],
            "rows": rows,
        },
        "verdict": stats.verdict(outcome, detail),
        "data": {"precisions": results, "underflow": under},
    }


def plot(result: dict[str, Any], fig_dir: Path) -> list[str]:
    """Time and memory per precision, and the gradient-magnitude histogram against fp16's range."""
    prec, under = result["data"]["precisions"], result["data"]["underflow"]
    fig, axes = plots.figure(3, 1, width=4.2)
    names = list(prec)
    plots.bars(axes[0, 0], names, {"ms/step": [prec[n]["ms_per_step"] for n in names]})
    axes[0, 0].set_title("time per step (ms)")
    plots.bars(axes[0, 1], names, {"MiB": [prec[n]["saved_mb"] for n in names]})
    axes[0, 1].set_title("activation memory (MiB)")
    ax = axes[0, 2]
    edges = np.asarray(under["log2_bins"], dtype=float)
    hist = np.asarray(under["hist"], dtype=float)
    ax.stairs(hist, edges, fill=True, alpha=0.5, label="|g|")
    ax.stairs(hist, edges + np.log2(2.0**16), fill=True, alpha=0.5, label="|g| x 2^16 (scaled)")
    ax.axvline(-14, color="k", ls="--", lw=1, label="fp16 min normal 2^-14")
    ax.axvline(-24, color="r", ls="--", lw=1, label="fp16 min subnormal 2^-24")
    ax.axvline(16, color="m", ls=":", lw=1, label="fp16 max ~2^16")
    ax.set(
        xlabel="log2 |gradient|",
        ylabel="entries",
        title=f"flushed: {under['flushed']:.2%} unscaled, {under['flushed_scaled']:.2%} scaled",
    )
    ax.legend(fontsize=6)
    return [plots.save(fig, fig_dir, "amp.png")]
