"""Mixed precision: fp16 underflow of activation gradients, loss scaling, fp16 training on the
CPU with and without a GradScaler; bf16 speed and memory as a side table."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from .. import plots
from ..data import digits_split
from ..models import DigitsCNN
from ..optimizers import build
from ..protocol import Comparison, Experiment, difference
from ._common import digits

FP16_MIN_NORMAL = 2.0**-14
FP16_MIN_SUBNORMAL = 2.0**-24
SCALE = 2.0**16  # torch.amp.GradScaler's initial scale
LR = 3e-3
LOG2_BINS = np.arange(-50, 5)
PRECISIONS = {"fp32": None, "fp16": torch.float16, "fp16_scaler": torch.float16}
NAMES = {
    "fp32": "fp32",
    "fp16": "fp16 autocast, no loss scaling",
    "fp16_scaler": "fp16 autocast + GradScaler",
}

CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {"steps": 8, "batch_size": 32, "eval_every": 4, "timing_steps": 4},
    "quick": {"steps": 200, "batch_size": 64, "eval_every": 100, "timing_steps": 20},
    "full": {"steps": 400, "batch_size": 64, "eval_every": 100, "timing_steps": 40},
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


def activation_grads(model: DigitsCNN, x, y, dtype=None, scale: float = 1.0) -> torch.Tensor:
    """The gradients of every layer's output (the activations) for one batch, flattened, as the
    backward pass computes them: in ``dtype`` under CPU autocast (fp16: these are the tensors
    that underflow), of the loss multiplied by ``scale``. The model's ``.grad`` are left None."""
    saved: list[torch.Tensor] = []
    layers = (model.conv1, model.conv2, model.fc1, model.fc2)

    def keep(_module, _inputs, out):
        out.register_hook(lambda g: saved.append(g.detach().flatten().clone()))

    hooks = [m.register_forward_hook(keep) for m in layers]
    try:
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss = F.cross_entropy(model(x).float(), y)
        (loss * scale).backward()
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad(set_to_none=True)
    return torch.cat([g.double() for g in saved])


def underflow(model: DigitsCNN) -> dict[str, Any]:
    """Activation-gradient underflow of a trained model on 256 test images: simulated (fp32
    gradients cast to fp16) and real (an fp16-autocast backward), without and with x2^16."""
    data = digits_split("test")
    x, y = data.x_test[:256], data.y_test[:256]
    g32 = activation_grads(model, x, y)
    nonzero = g32 != 0
    real = {}
    for key, scale in (("real_flushed", 1.0), ("real_flushed_scaled", SCALE)):
        g16 = activation_grads(model, x, y, torch.float16, scale)
        real[key] = float(((g16 == 0) & nonzero).double().sum() / nonzero.sum())
    hist = np.histogram(np.log2(g32[nonzero].abs().numpy()), LOG2_BINS)[0].tolist()
    return {**fp16_fractions(g32), **real, "hist": hist}


def trial(cfg: dict[str, Any], arm: str, seed: int) -> dict[str, Any]:
    """Train the digits CNN with Adam in one precision, then measure the underflow."""
    r = digits(
        cfg,
        seed,
        lambda m: build("adam", m, LR),
        autocast=PRECISIONS[arm],
        scaler=arm == "fp16_scaler",
        probe=underflow,
    )
    keys = (
        "acc",
        "loss",
        "train_loss",
        "skipped",
        "flushed",
        "flushed_scaled",
        "subnormal",
        "overflow_scaled",
        "real_flushed",
        "real_flushed_scaled",
        "hist",
        "curve",
    )
    return {k: r[k] for k in keys}


def comparisons(cfg: dict[str, Any]) -> list[Comparison]:
    """Voting: the real fp16 backward flushes more activation gradients without scaling.
    Secondary: the simulated cast, and what scaling does to fp16 training."""
    return [
        Comparison(
            "share of non-zero activation gradients flushed to 0 by an fp16 backward: "
            "unscaled - scaled x2^16 (fp32-trained model)",
            lambda m: m["fp32"]["real_flushed"] - m["fp32"]["real_flushed_scaled"],
            +1,
            unit="(fraction)",
        ),
        Comparison(
            "same, fp32 gradients cast to fp16: unscaled - scaled",
            lambda m: m["fp32"]["flushed"] - m["fp32"]["flushed_scaled"],
            +1,
            unit="(fraction)",
            in_verdict=False,
        ),
        difference(
            "fp16_scaler",
            "fp16",
            "acc",
            +1,
            unit="(accuracy)",
            in_verdict=False,
            name="fp16 training, test accuracy: GradScaler - none",
        ),
        difference(
            "fp16_scaler",
            "fp16",
            "train_loss",
            -1,
            unit="(nats)",
            in_verdict=False,
            name="fp16 training, final training loss: GradScaler - none",
        ),
        difference(
            "fp16_scaler",
            "fp32",
            "acc",
            +1,
            unit="(accuracy)",
            in_verdict=False,
            name="test accuracy: fp16 + GradScaler - fp32",
        ),
    ]


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


def speed(cfg: dict[str, Any]) -> dict[str, Any]:
    """Side table: median time per training step and activation memory per precision (CPU)."""
    data = digits_split("test")
    rows, data_out = [], {}
    for name, dtype in (
        ("fp32", None),
        ("bf16 autocast", torch.bfloat16),
        ("fp16 autocast", torch.float16),
    ):
        torch.manual_seed(0)
        model = DigitsCNN(16)
        opt = build("adam", model, LR)
        x, y = data.x_train[:256], data.y_train[:256]
        times = []
        for _ in range(cfg["timing_steps"] + 3):
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                loss = F.cross_entropy(model(x).float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
        ms = 1e3 * statistics.median(times[3:])
        mib = saved_bytes(model, x, "cpu", dtype) / 2**20
        rows.append([name, f"{ms:.2f}", f"{mib:.2f}"])
        data_out[name] = {"ms_per_step": ms, "saved_mib": mib}
    return {
        "tables": [
            {
                "title": "Side table (not a verdict): CPU time per training step (median of "
                f"{cfg['timing_steps']}, after 3 warm-up steps; digits CNN width 16, batch "
                "256; one measurement, other processes may share the CPU) and the memory "
                "autograd keeps for the backward pass",
                "columns": ["precision", "ms per step", "activation memory (MiB)"],
                "rows": rows,
            }
        ],
        "data": data_out,
    }


def setup(cfg: dict[str, Any]) -> str:
    """The setup paragraph."""
    return (
        f"The digits CNN (width 8) trained {cfg['steps']} steps at batch {cfg['batch_size']} "
        f"with Adam (lr {LR}, not tuned: the same for every arm) in fp32, under CPU fp16 "
        f"autocast (torch {torch.__version__} supports it) without loss scaling, and with "
        f"torch.amp.GradScaler('cpu') stepped through rangerlab.amp.scaler_step. Underflow: "
        f"after training, the gradients of every layer's output (activation gradients) on 256 "
        f"test images, from a real fp16-autocast backward pass without and with the loss "
        f"multiplied by 2^16 (GradScaler's initial scale), counted against the entries that "
        f"are non-zero in the fp32 backward; also fp32 gradients cast to fp16 (fp16's smallest "
        f"subnormal is 2^-24, smallest normal 2^-14)."
    )


def plot(result: dict[str, Any], fig_dir: Path) -> list[str]:
    """Activation-gradient magnitudes against fp16's range; training loss per precision."""
    r0 = result["runs"]["fp32"][0]
    edges = np.asarray(LOG2_BINS, dtype=float)
    hist = np.asarray(r0["hist"], dtype=float)
    fig, axes = plots.figure(2, 1, width=5.2, height=3.8)
    ax = axes[0, 0]
    ax.stairs(hist, edges, fill=True, alpha=0.5, color="tab:blue", label="|g|")
    ax.stairs(
        hist,
        edges + 16,
        fill=False,
        color="tab:orange",
        lw=1.5,
        ls="--",
        label="|g| x 2^16 (scaled)",
    )
    ax.axvline(-14, color="k", ls="--", lw=1, label="fp16 smallest normal 2^-14")
    ax.axvline(-24, color="r", ls=":", lw=1.5, label="fp16 smallest subnormal 2^-24")
    ax.axvline(16, color="m", ls="-.", lw=1, label="fp16 largest ~2^16")
    ax.set(
        xlabel="log2 |activation gradient| (fp32 backward)",
        ylabel="entries",
        title=f"seed 0: {r0['real_flushed']:.1%} flushed in fp16, "
        f"{r0['real_flushed_scaled']:.2%} with x2^16",
    )
    ax.legend(fontsize=6)
    ax = axes[0, 1]
    for i, arm in enumerate(NAMES):
        rs = result["runs"][arm]
        plots.series(
            ax,
            rs[0]["curve"]["step"],
            [plots.positive(r["curve"]["train_loss"]) for r in rs],
            NAMES[arm],
            i,
        )
    ax.set(
        yscale="log",
        xlabel="optimizer step",
        ylabel="training loss (nats, log)",
        title="training in each precision",
    )
    ax.legend(fontsize=7)
    return [plots.save(fig, fig_dir, "amp.png")]


EXPERIMENT = Experiment(
    id="amp",
    title="Mixed precision: fp16 underflow and loss scaling",
    description="fp16 activation-gradient underflow with/without loss scaling; fp16 training",
    claim=(
        "\"Some parts do not fit when converted to fp16 (fp16's range does not cover the "
        'distribution of the values) -> they become exactly 0; those parts need fp32." '
        "Tested: an fp16 backward pass flushes a share of the non-zero activation gradients to "
        "zero, and loss scaling (x2^16) removes that underflow."
    ),
    claim_zh=(
        "有些部分再轉成fp16的時候會不夠用(fp16的分布沒有涵蓋到模型權重的分布) -> 造成直接變成0 "
        "- 這些部分需要使用fp32來確保精度"
    ),
    arms=lambda cfg: list(NAMES),
    metrics={
        "acc": "test accuracy (fraction)",
        "train_loss": "final training loss (nats)",
        "skipped": "steps the GradScaler skipped (inf/NaN gradients)",
        "real_flushed": "activation gradients flushed by an fp16 backward (fraction)",
        "real_flushed_scaled": "the same with the loss x2^16 (fraction)",
        "overflow_scaled": "fp32 gradients x2^16 that overflow fp16 (fraction)",
    },
    comparisons=comparisons,
    trial=trial,
    configs=CONFIGS,
    seeds={"tiny": 2, "quick": 6, "full": 8},
    setup=setup,
    shows=(
        "How much of the backward pass fp16 cannot represent on this model, and that a 2^16 "
        "loss scale brings it back into range; and whether that changes fp16 training here."
    ),
    cannot_show=(
        "CPU fp16 autocast is an emulation target, not the GPU kernels AMP is built for, so "
        "speed says nothing about GPUs; the side table's times are one noisy measurement. The "
        "lecture's other AMP claims (better generalization, robustness) are not tested."
    ),
    plot=plot,
    extra=speed,
    labels=NAMES,
)
