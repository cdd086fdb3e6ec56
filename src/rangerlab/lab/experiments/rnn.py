"""A character-level LSTM on the standard library's docstrings: does Ranger suit RNNs?"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from .. import plots, stats
from ..data import CHARSET, encode, load_stdlib_text
from ..models import CharLSTM
from ..optimizers import label, make_optimizer
from ..training import eval_weights, seed_everything

ID = "rnn"
TITLE = "Ranger on an RNN"
DESCRIPTION = "character-level LSTM on the Python standard library's docstrings: bits per character"
CLAIM = (
    "Ranger is doubtful on RNNs: on a character-level LSTM it ends with a worse (higher) "
    "validation bits-per-character than Adam."
)
OPTS = ["adam", "radam", "lookahead-adam", "ranger"]
LR = 3e-3

CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {
        "chars": 30_000,
        "steps": 10,
        "eval_every": 5,
        "seq": 32,
        "batch_size": 16,
        "hidden": 32,
    },
    "quick": {
        "chars": 100_000,
        "steps": 120,
        "eval_every": 20,
        "seq": 48,
        "batch_size": 32,
        "hidden": 64,
    },
    "full": {
        "chars": 1_000_000,
        "steps": 2000,
        "eval_every": 100,
        "seq": 128,
        "batch_size": 32,
        "hidden": 256,
    },
}


def _split(cfg: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoded text, split 90/10 into training and validation (validation is the end)."""
    ids = encode(load_stdlib_text(cfg["chars"]))
    cut = int(0.9 * len(ids))
    return ids[:cut], ids[cut:]


@torch.no_grad()
def bits_per_char(model: CharLSTM, val: torch.Tensor, seq: int) -> float:
    """Mean next-character cross-entropy on ``val`` in bits, over non-overlapping windows."""
    n = (len(val) - 1) // seq
    x = val[: n * seq].view(n, seq)
    y = val[1 : n * seq + 1].view(n, seq)
    loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    return loss.item() / math.log(2)


def _train(name: str, seed: int, cfg: dict[str, Any], train, val) -> dict[str, list[float]]:
    generator = seed_everything(seed)
    model = CharLSTM(len(CHARSET), hidden=cfg["hidden"])
    opt = make_optimizer(name, model.parameters(), LR)
    seq, batch = cfg["seq"], cfg["batch_size"]
    curve_steps, bpc = [], []
    for step in range(1, cfg["steps"] + 1):
        starts = torch.randint(0, len(train) - seq - 1, (batch,), generator=generator)
        x = torch.stack([train[s : s + seq] for s in starts.tolist()])
        y = torch.stack([train[s + 1 : s + seq + 1] for s in starts.tolist()])
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % cfg["eval_every"] == 0 or step == cfg["steps"]:
            with eval_weights(opt):
                bpc.append(bits_per_char(model, val, seq))
            curve_steps.append(step)
    return {"step": curve_steps, "val_bpc": bpc}


def run(cfg: dict[str, Any], seeds: list[int], bar) -> dict[str, Any]:
    """Train each optimizer on random windows of the text, once per seed, all at the same rate."""
    bar.reset(total=len(OPTS) * len(seeds))
    train, val = _split(cfg)
    runs: dict[str, list[dict[str, list[float]]]] = {}
    for name in OPTS:
        runs[name] = []
        for seed in seeds:
            runs[name].append(_train(name, seed, cfg, train, val))
            bar.update()
    final = {n: [r["val_bpc"][-1] for r in rs] for n, rs in runs.items()}
    best = {n: [min(r["val_bpc"]) for r in rs] for n, rs in runs.items()}
    rows = [[label(n), stats.fmt(final[n]), stats.fmt(best[n])] for n in OPTS]
    outcome = stats.compare(final["ranger"], final["adam"])
    detail = (
        f"Final validation bits per character: Ranger {stats.fmt(final['ranger'])}, Adam "
        f"{stats.fmt(final['adam'])} (lower is better)."
    )
    return {
        "setup": (
            f"{len(train) + len(val):,} characters of standard-library docstrings (first "
            f"90% to train, last 10% to validate); an LSTM (embedding 32, hidden "
            f"{cfg['hidden']}) trained {cfg['steps']} steps on {cfg['batch_size']} random "
            f"windows of {cfg['seq']} characters, every optimizer at lr {LR}. Lookahead "
            f"optimizers are evaluated on their slow weights."
        ),
        "table": {
            "columns": ["optimizer", "final val bits/char", "best val bits/char"],
            "rows": rows,
        },
        "verdict": stats.verdict(outcome, detail),
        "data": {"runs": runs, "chars": len(train) + len(val)},
    }


def plot(result: dict[str, Any], fig_dir: Path) -> list[str]:
    """Validation bits per character against steps, mean ± std over seeds."""
    fig, axes = plots.figure(1, 1, width=6)
    for name, rs in result["data"]["runs"].items():
        plots.band(axes[0, 0], rs[0]["step"], [r["val_bpc"] for r in rs], label(name))
    axes[0, 0].set(
        xlabel="step", ylabel="validation bits per character", title="character-level LSTM"
    )
    axes[0, 0].legend()
    return [plots.save(fig, fig_dir, "rnn.png")]
