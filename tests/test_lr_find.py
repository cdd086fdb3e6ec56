"""lr_find: the sweep, the suggestion on a real problem, and a bit-exact restore of everything."""

from __future__ import annotations

import copy
import importlib
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import rangerlab
from rangerlab import lr_find

lookahead_wrapper = importlib.import_module("rangerlab.optim.lookahead")
lookahead_link = importlib.import_module("rangerlab.transforms.lookahead")  # the module


class Small(nn.Module):
    """BatchNorm (buffers) and Dropout (draws random numbers): both must come back unchanged."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3)
        )

    def forward(self, x):
        return self.net(x)


def batches(n=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 6, generator=gen), torch.randint(0, 3, (16,), generator=gen))
            for _ in range(n)]  # fmt: skip


def snapshot(model, opt, scaler=None):
    return {
        "model": copy.deepcopy(model.state_dict()),
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "modes": [m.training for m in model.modules()],
        "opt": copy.deepcopy(opt.state_dict()),
        "rng": torch.random.get_rng_state(),
        "scaler": None if scaler is None else scaler.state_dict(),
        "telemetry": opt.telemetry(reset=False) if hasattr(opt, "telemetry") else None,
    }


def assert_same(a, b):
    """Equal bit for bit, through nested dicts, lists and tensors."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b or (a != a and b != b)


def trained(opt_factory):
    torch.manual_seed(0)
    model = Small()
    opt = opt_factory(model)
    for x, y in batches(3, seed=5):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()  # a mode to restore
    return model, opt


@pytest.mark.parametrize(
    "factory",
    [
        lambda m: rangerlab.Ranger(m.parameters(), k=2, telemetry=True),
        lambda m: rangerlab.Lookahead(torch.optim.AdamW(m.parameters()), k=2),
        lambda m: rangerlab.LARS(m.parameters(), lr=0.1, foreach=True),
    ],
    ids=["ranger", "lookahead-adamw", "lars"],
)
def test_restores_model_optimizer_scaler_and_rng_bit_exactly(factory):
    model, opt = trained(factory)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=2)
    before = snapshot(model, opt, scaler)
    result = lr_find(model, F.cross_entropy, batches(), opt, num_steps=12, scaler=scaler)
    assert len(result.lrs) >= 2
    assert_same(before, snapshot(model, opt, scaler))
    # and training continues as if lr_find had never run
    twin_model, twin_opt = trained(factory)
    for m, o in ((model, opt), (twin_model, twin_opt)):
        o.zero_grad()
        F.cross_entropy(m(batches(1, seed=9)[0][0]), batches(1, seed=9)[0][1]).backward()
        o.step()
    for a, b in zip(model.parameters(), twin_model.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", list(rangerlab.list_optimizers()))
def test_every_factory_name(name):
    torch.manual_seed(0)
    model = Small()
    kwargs = {"lookahead": True, "k": 2} if name == "adam" else {}
    result = lr_find(
        model, F.cross_entropy, batches(), name, num_steps=15, end_lr=1.0, optimizer_kwargs=kwargs
    )
    assert 1 <= len(result.lrs) == len(result.losses) == len(result.smoothed) <= 15
    assert result.lrs[0] == pytest.approx(1e-7)
    ratios = [b / a for a, b in zip(result.lrs, result.lrs[1:])]
    assert ratios == pytest.approx([(1.0 / 1e-7) ** (1 / 14)] * len(ratios))  # exponential
    assert 1e-7 <= result.suggestion <= 1.0 and result.reason


def test_lookahead_syncs_are_suspended_during_the_sweep(monkeypatch):
    syncs = []
    monkeypatch.setattr(lookahead_link, "sync_", lambda *a: syncs.append("chain"))
    monkeypatch.setattr(
        lookahead_wrapper.Lookahead, "_sync", lambda self, group: syncs.append("wrapper")
    )
    for make in (
        lambda m: rangerlab.Ranger(m.parameters(), k=2, foreach=True),
        lambda m: rangerlab.Lookahead(torch.optim.SGD(m.parameters(), lr=0.1), k=2),
    ):
        model = Small()
        opt = make(model)
        lr_find(model, F.cross_entropy, batches(), opt, num_steps=8, end_lr=1e-2)
        assert syncs == []
        assert opt.param_groups[0]["k"] == 2  # restored


def test_smoothing_divergence_and_suggestions():
    torch.manual_seed(0)
    model = Small()
    r = lr_find(model, F.cross_entropy, batches(), "sgd", num_steps=60, smoothing=0.5,
                end_lr=1e4)  # fmt: skip
    assert r.diverged and len(r.lrs) < 60
    average = 0.0
    for i, (loss, smooth) in enumerate(zip(r.losses, r.smoothed)):
        average = 0.5 * average + 0.5 * loss
        assert smooth == pytest.approx(average / (1 - 0.5 ** (i + 1)))
    assert r.smoothed[-1] > 4 * min(r.smoothed[:-1]) or not math.isfinite(r.losses[-1])
    assert r.minimum == r.lrs[r.smoothed.index(min(r.smoothed))]
    by_min = lr_find(Small(), F.cross_entropy, batches(), "sgd", num_steps=4, suggest="min")
    assert by_min.suggestion == pytest.approx(by_min.minimum / 10) and "tenth" in by_min.reason


def test_bad_input():
    model = Small()
    with pytest.raises(ValueError, match="start_lr"):
        lr_find(model, F.cross_entropy, batches(), start_lr=1.0, end_lr=0.1)
    with pytest.raises(ValueError, match="num_steps"):
        lr_find(model, F.cross_entropy, batches(), num_steps=1)
    with pytest.raises(ValueError, match="suggest"):
        lr_find(model, F.cross_entropy, batches(), suggest="best")
    with pytest.raises(ValueError, match="Unknown optimizer name"):
        lr_find(model, F.cross_entropy, batches(), "adagrad")
    with pytest.raises(TypeError, match="model"):
        lr_find(lambda x: x, F.cross_entropy, batches())


def test_finds_the_known_good_region_on_the_digits_cnn():
    pytest.importorskip("sklearn", reason="the digits ship with scikit-learn (the 'lab' extra)")
    from rangerlab.lab.data import load_digits
    from rangerlab.lab.models import DigitsCNN
    from rangerlab.lab.optimizers import CENTRE

    data = load_digits()
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data.y_train), generator=gen)
    train = [(data.x_train[order[i : i + 64]], data.y_train[order[i : i + 64]])
             for i in range(0, len(order) - 63, 64)]  # fmt: skip
    torch.manual_seed(0)
    model = DigitsCNN()
    result = lr_find(model, F.cross_entropy, train, "adam", start_lr=1e-5, num_steps=80)
    assert result.smoothed[-1] > 1.2 * min(result.smoothed)  # the sweep went past the minimum
    # Measured by a grid (2 epochs, this split): Adam trains this CNN at 1e-3 .. 1e-2 (72-91%
    # test accuracy) and collapses to chance from 3e-2.
    assert 1e-3 <= result.suggestion < 3e-2, result.suggestion

    def accuracy(lr):
        torch.manual_seed(0)
        net = DigitsCNN()
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        for x, y in train * 2:
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
        return (net(data.x_test).argmax(1) == data.y_test).float().mean().item()

    at = accuracy(result.suggestion)
    assert at > 0.7 and at > accuracy(result.suggestion * 30) + 0.3, at
    # Within a decade of the centre of the lab's tuning grid for Adam on this CNN.
    assert CENTRE["adam"] / 10 <= result.suggestion <= CENTRE["adam"] * 10


def test_plot_draws_the_curve_and_the_suggestion():
    pytest.importorskip("matplotlib", reason="plots need the 'lab' extra")
    import matplotlib

    matplotlib.use("Agg")
    r = lr_find(Small(), F.cross_entropy, batches(), "adam", num_steps=20)
    fig = r.plot()
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert len(ax.lines) == 3 and list(ax.lines[1].get_ydata()) == r.smoothed
    assert ax.lines[2].get_xdata()[0] == r.suggestion
