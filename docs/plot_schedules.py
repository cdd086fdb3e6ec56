"""Draw the schedules of rangerlab.schedules into docs/img/ (python docs/plot_schedules.py).

The PNGs are committed, so building the docs needs neither this script nor matplotlib.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from rangerlab import Adam  # noqa: E402
from rangerlab.schedules import flat_cosine, linear_warmup, untuned_warmup, warmup_cosine  # noqa: E402

STEPS = 1000
SCHEDULES = {
    "linear_warmup": ("linear_warmup(opt, warmup_steps=200)", lambda o: linear_warmup(o, 200)),
    "untuned_warmup": ("untuned_warmup(opt)  # betas=(0.9, 0.995): 400 steps", untuned_warmup),
    "flat_cosine": ("flat_cosine(opt, total_steps=1000)", lambda o: flat_cosine(o, STEPS)),
    "warmup_cosine": (
        "warmup_cosine(opt, 100, 1000, min_lr=1e-4)",
        lambda o: warmup_cosine(o, 100, STEPS, min_lr=1e-4),
    ),
}


def lr_curve(build) -> list[float]:
    opt = Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3, betas=(0.9, 0.995))
    sched, lrs = build(opt), []
    for _ in range(STEPS):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def main() -> None:
    out = Path(__file__).parent / "img"
    out.mkdir(exist_ok=True)
    for name, (title, build) in SCHEDULES.items():
        fig, ax = plt.subplots(figsize=(6, 2.6), dpi=100)
        ax.plot(lr_curve(build), color="tab:blue")
        ax.set(title=title, xlabel="optimizer step", ylabel="lr (base 1e-3)", ylim=(0, 1.1e-3))
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png")
        plt.close(fig)


if __name__ == "__main__":
    main()
