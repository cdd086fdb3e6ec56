"""Regenerate the telemetry and lr_find pictures of the README: ``python docs/plot_telemetry.py``.

Trains the lab's digits CNN (scikit-learn's digits, nothing downloaded) with Ranger-LARS and
``telemetry=True``, recording every step, and runs ``rangerlab.lr_find`` for Adam on the same
model. Writes ``docs/img/telemetry_trust_ratio.png`` and ``docs/img/lr_find.png``.
"""

from pathlib import Path

import matplotlib
import torch
from torch.nn import functional as F

import rangerlab
from rangerlab.lab.data import load_digits
from rangerlab.lab.models import DigitsCNN

matplotlib.use("Agg")
OUT = Path(__file__).parent / "img"


def batches(data, size=64, seed=0):
    order = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(seed))
    return [(data.x_train[order[i : i + size]], data.y_train[order[i : i + size]])
            for i in range(0, len(order) - size + 1, size)]  # fmt: skip


def main() -> None:
    OUT.mkdir(exist_ok=True)
    data = load_digits()
    train = batches(data)
    torch.manual_seed(0)
    model = DigitsCNN()
    opt = rangerlab.create_optimizer(model, "ranger_lars", lr=1e-2, telemetry=True)
    records = []
    for step, (x, y) in enumerate(train * 3, start=1):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        records.append({"step": step, **opt.telemetry()})
    fig = rangerlab.plot_telemetry(records, "trust_ratio", first_steps=30)
    fig.savefig(OUT / "telemetry_trust_ratio.png", dpi=110)

    torch.manual_seed(0)
    result = rangerlab.lr_find(DigitsCNN(), F.cross_entropy, train, "adam", start_lr=1e-5,
                               num_steps=80)  # fmt: skip
    result.plot().savefig(OUT / "lr_find.png", dpi=110)
    print(f"lr_find suggests {result.suggestion:.2g} ({result.reason})")


if __name__ == "__main__":
    main()
