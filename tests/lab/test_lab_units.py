"""Pieces of the experiments checked against exact values."""

import math

import pytest
import torch

from rangerlab.lab.experiments import layer_table
from rangerlab.lab.experiments.amp import FP16_MIN_SUBNORMAL, fp16_fractions, saved_bytes
from rangerlab.lab.experiments.layer_table import LAYERS, LR, TRUST, WEIGHT_DECAY, layer_norms
from rangerlab.lab.surfaces import SURFACES


@pytest.mark.parametrize("name", list(SURFACES))
def test_surfaces_minimum_is_a_stationary_point_with_the_stated_value(name):
    s = SURFACES[name]
    p = torch.tensor(s.minimum, dtype=torch.float64, requires_grad=True)
    f = s.f(p)
    (g,) = torch.autograd.grad(f, p)
    assert f.item() == pytest.approx(s.f_min, abs=1e-12)
    assert g.abs().max().item() < 1e-9
    # a nearby point is higher: it is a minimum, not a saddle
    assert s.f(p.detach() + 1e-3).item() > s.f_min


def test_saddle_has_a_saddle_at_the_origin():
    f = SURFACES["saddle"].f
    o = torch.zeros(2, dtype=torch.float64)
    assert f(o + torch.tensor([1e-2, 0.0], dtype=torch.float64)) > f(o)
    assert f(o + torch.tensor([0.0, 1e-2], dtype=torch.float64)) < f(o)


def test_fp16_fractions_exact():
    g = torch.tensor([1e-9, 1e-6, 1e-2, 0.0, 10.0])  # the 0 is ignored
    fr = fp16_fractions(g, scale=2.0**16)
    assert fr["flushed"] == 0.25  # 1e-9 < 2^-25
    assert fr["subnormal"] == 0.25  # 1e-6 is between 2^-24 and 2^-14
    assert fr["flushed_scaled"] == 0.0  # 1e-9 * 65536 = 6.6e-5 is representable
    assert fr["overflow_scaled"] == 0.25  # 10 * 65536 > 65504
    assert FP16_MIN_SUBNORMAL == torch.finfo(torch.float16).smallest_normal * 2.0**-10
    with pytest.raises(ValueError, match="non-zero"):
        fp16_fractions(torch.zeros(3))


def test_saved_bytes_counts_a_linear_layer_exactly():
    lin = torch.nn.Linear(4, 3, bias=False)
    x = torch.randn(5, 4)
    # fp32: autograd keeps the input (5x4 floats) for the weight gradient
    assert saved_bytes(lin, x, "cpu", None) == 5 * 4 * 4
    # bf16 autocast keeps the bf16 copy of that input instead: half the bytes
    assert saved_bytes(lin, x, "cpu", torch.bfloat16) == 5 * 4 * 2


def _lars_by_hand(model, x, y):
    """One LARS step's per-layer quantities computed directly (You et al. 2017, eq. 6): the
    reference the layer table's telemetry must match. Weights get weight decay and the trust
    ratio; biases neither (create_optimizer's groups)."""
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    out = {}
    for name, p in model.named_parameters():
        w, g = p.detach(), p.grad.detach()
        layerwise = p.dim() > 1
        wd = WEIGHT_DECAY if layerwise else 0.0
        wn, gn = w.norm().item(), g.norm().item()
        trust = TRUST * wn / (gn + wd * wn + 1e-8) if layerwise else 1.0
        step = LR * trust * (g + wd * w).norm().item()  # momentum's first step: v_1 = d
        out[name] = {"weight": wn, "grad": gn, "update": step, "ratio": step / wn, "trust": trust}
    model.zero_grad(set_to_none=True)
    return out


def test_layer_norms_matches_one_lars_step_by_hand_without_changing_the_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    x, y = torch.randn(8, 3), torch.tensor([0, 1] * 4)
    before = [p.detach().clone() for p in model.parameters()]
    table = layer_norms(model, x, y)
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    assert all(p.grad is None for p in model.parameters())
    expected = _lars_by_hand(model, x, y)
    assert set(table) == set(expected) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    for name, row in expected.items():
        for key, value in row.items():
            assert table[name][key] == pytest.approx(value, rel=1e-5), (name, key)
    # the trust ratio is a real per-layer factor here, not the default 1
    assert table["0.weight"]["trust"] != pytest.approx(table["2.weight"]["trust"], rel=1e-2)


def test_layer_norms_reads_the_optimizers_telemetry(monkeypatch):
    """The table's numbers are the ones `opt.telemetry()` returns (one read, after one step)."""
    import rangerlab

    reads = []
    real = rangerlab.Chain.telemetry

    def spy(self, reset=True):
        out = real(self, reset)
        reads.append(dict(out))
        return {k: (2 * v if "/" in k and not k.startswith("lr/") else v) for k, v in out.items()}

    monkeypatch.setattr(rangerlab.Chain, "telemetry", spy)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    x, y = torch.randn(8, 3), torch.tensor([0, 1] * 4)
    table = layer_norms(model, x, y)
    assert len(reads) == 1 and reads[0]["recorded_steps"] == 1
    seen = reads[0]
    for name, row in table.items():
        assert row["weight"] == 2 * seen[f"weight_norm/{name}"]
        assert row["grad"] == 2 * seen[f"grad_norm/{name}"]
        assert row["update"] == 2 * seen[f"update_norm/{name}"]
        assert row["ratio"] == 2 * seen[f"update_ratio/{name}"]
    assert table["0.weight"]["trust"] == 2 * seen["trust_ratio/0.weight"]


def test_layer_table_trial_is_the_telemetry_of_one_lars_step_on_its_batch():
    """The stored per-layer metrics of a trial equal a direct computation on the same seeded
    model and batch, and the spreads are computed from them."""
    from rangerlab.lab.data import digits_split
    from rangerlab.lab.models import DeepCNN
    from rangerlab.lab.training import seed_everything

    cfg = layer_table.CONFIGS["tiny"]
    metrics = layer_table.trial(cfg, "init", 3)
    data = digits_split("test")
    generator = seed_everything(3)
    model = DeepCNN(cfg["width"])
    idx = torch.randperm(len(data.y_train), generator=generator)[: cfg["batch_size"]]
    expected = _lars_by_hand(model, data.x_train[idx], data.y_train[idx])
    for n in LAYERS:
        row = expected[n]
        assert metrics[f"|w| {n}"] == pytest.approx(row["weight"], rel=1e-5)
        assert metrics[f"|g| {n}"] == pytest.approx(row["grad"], rel=1e-4)
        assert metrics[f"w/g {n}"] == pytest.approx(row["weight"] / row["grad"], rel=1e-4)
        assert metrics[f"trust {n}"] == pytest.approx(row["trust"], rel=1e-4)
        assert metrics[f"dw/w {n}"] == pytest.approx(row["ratio"], rel=1e-4)
    ratios = [metrics[f"w/g {n}"] for n in LAYERS]
    steps = [metrics[f"dw/w {n}"] for n in LAYERS]
    assert metrics["spread_decades"] == pytest.approx(math.log10(max(ratios) / min(ratios)))
    assert metrics["lars_spread_decades"] == pytest.approx(math.log10(max(steps) / min(steps)))
    # LARS's rule: the relative step is at most lr x trust coefficient (equal when g, w align)
    assert max(steps) <= LR * TRUST * (1 + 1e-5)


def test_layer_table_renders_the_lars_columns_from_the_runs():
    runs = [
        {
            **{f"|w| {n}": 2.0 for n in LAYERS},
            **{f"|g| {n}": 0.5 for n in LAYERS},
            **{f"w/g {n}": 4.0 + s for n in LAYERS},
            **{f"trust {n}": 0.01 * (s + 1) for n in LAYERS},
            **{f"dw/w {n}": 1e-3 for n in LAYERS},
        }
        for s in range(2)
    ]
    t = layer_table.table({"runs": {"init": runs}})
    assert t["columns"][-2:] == ["LARS trust ratio", "LARS ||dw|| / ||w||"]
    assert t["rows"][0] == ["convs.0.weight", "2", "0.5", "4.5", "4 - 5", "0.015", "0.001"]


def test_steps_to_min_is_the_step_from_which_the_run_stays_below_tolerance():
    from rangerlab.lab.experiments.race import TOL, steps_to_min

    nan = float("nan")
    gap = torch.tensor(
        [[1.0, 1.0, 1.0, 1.0], [TOL / 2, TOL / 2, nan, 1.0], [TOL / 2, 1.0, nan, TOL / 3]]
    )
    # arrives at 1 and stays; passes through and leaves; diverges; arrives at the last step
    assert steps_to_min(gap) == [1, None, None, 2]


def test_rectifier_matches_torch_radam_step_sizes():
    from rangerlab.lab.training import rectifier

    # torch's RAdam: with a constant gradient g the step is lr * r_t * m_hat / sqrt(v_hat) =
    # lr * r_t (both estimates equal g), and lr * m_hat (un-adapted) while rho_t <= 5
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.RAdam([p], lr=1.0, betas=(0.9, 0.99), eps=0.0)
    for t in range(1, 40):
        before = p.detach().clone()
        p.grad = torch.ones(1, dtype=torch.float64)
        opt.step()
        step = (before - p.detach()).item()
        if rectifier(t, 0.99) > 0 and t > 5:
            assert step == pytest.approx(rectifier(t, 0.99), rel=1e-9)
    assert rectifier(500, 0.99) > 0.97 and rectifier(100, 0.999) < 0.3


def test_epochs_of_covers_each_epoch_once_with_full_batches():
    from rangerlab.lab.training import epochs_of

    pick = epochs_of(10, 3, torch.Generator().manual_seed(0))
    first = torch.cat([pick(s) for s in range(3)])
    assert len(first) == 9 and len(set(first.tolist())) == 9  # the 10th waits for next epoch
    assert all(len(pick(s)) == 3 for s in range(3, 9))
    with pytest.raises(ValueError, match="batch_size"):
        epochs_of(2, 3, torch.Generator())


def test_digits_validation_split_is_disjoint_from_train_and_test():
    from rangerlab.lab.data import digits_split

    val, test = digits_split("val"), digits_split("test")
    assert torch.equal(val.x_train, test.x_train)
    assert len(val.y_test) == 288 and len(test.y_test) == 360
    train = {tuple(x.flatten().tolist()) for x in val.x_train}
    assert sum(tuple(x.flatten().tolist()) in train for x in val.x_test) < 5
    with pytest.raises(ValueError, match="split"):
        digits_split("train")


def test_deep_cnn_has_eight_weight_layers():
    from rangerlab.lab.models import DeepCNN

    model = DeepCNN(4)
    assert sum(p.ndim > 1 for p in model.parameters()) == 8
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_activation_gradient_underflow_counts_real_fp16_flushes():
    from rangerlab.lab.experiments.amp import SCALE, activation_grads
    from rangerlab.lab.models import DigitsCNN

    torch.manual_seed(0)
    model = DigitsCNN(4)
    x, y = torch.rand(8, 1, 8, 8), torch.arange(8) % 10
    g32 = activation_grads(model, x, y)
    assert all(p.grad is None for p in model.parameters())  # the model is left as it was
    g16 = activation_grads(model, x, y, torch.float16, 1e-6)  # tiny loss: many flush to 0
    g16s = activation_grads(model, x, y, torch.float16, 1e-6 * SCALE)
    nz = g32 != 0
    assert ((g16 == 0) & nz).sum() > ((g16s == 0) & nz).sum()


def test_warmup_adaptive_step_is_the_one_the_library_reports():
    """The warmup mechanism computes Adam's adaptive step per weight itself (telemetry keeps
    only per-tensor summaries); its tensor mean must equal the ``adaptive_lr_mean`` that
    rangerlab's Adam records when fed the same gradients, and RAdam's factor the ``rectifier``
    rangerlab's RAdam records, step by step."""
    import rangerlab
    from rangerlab.lab.experiments.warmup import BETA2, EPS, adaptive_step, second_moment
    from rangerlab.lab.training import rectifier

    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(6, 5))
    adam = rangerlab.create_optimizer([w], "adam", lr=1e-3, betas=(0.9, BETA2), telemetry=True)
    u = torch.nn.Parameter(torch.randn(6, 5))
    radam = rangerlab.create_optimizer([u], "radam", lr=1e-3, betas=(0.9, BETA2), telemetry=True)
    assert adam.defaults["eps"] == EPS
    v = None
    for t in range(1, 9):
        g = torch.randn(6, 5) * 10.0 ** torch.randint(-4, 1, (6, 5))  # scales across weights
        w.grad, u.grad = g.clone(), g.clone()
        adam.step()
        radam.step()
        v = second_moment(v, g.double())
        seen = adam.telemetry()
        ours = adaptive_step(v, t)
        assert seen["adaptive_lr_mean/group0.param0"] == pytest.approx(ours.mean().item(), rel=1e-4)
        cv = (ours.std(correction=0) / ours.mean()).item()
        assert seen["adaptive_lr_cv/group0.param0"] == pytest.approx(cv, rel=1e-3)
        r = radam.telemetry()
        if rectifier(t, BETA2) == 0.0:  # RAdam's first steps: no adaptive step, no r_t
            assert r["adaptive/group0.param0"] == 0.0
        else:
            assert r["adaptive/group0.param0"] == 1.0
            assert r["rectifier/group0.param0"] == pytest.approx(rectifier(t, BETA2), rel=1e-6)


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_stored_results_hold_the_telemetry_layer_table_and_the_rectifier_rule(mode):
    """The stored `rangerlab run` results the README quotes (tests/lab/data) come from the
    current experiments: the layer table's LARS columns (from telemetry) render, LARS's relative
    step is at most lr x trust coefficient in every layer, and the warmup mechanism's RAdam
    variance is 0 exactly at the steps where the library's rectifier is 0 (rho_t <= 5)."""
    import gzip
    import json
    from pathlib import Path

    from rangerlab.lab.experiments.warmup import BETA2
    from rangerlab.lab.training import rectifier

    stored = Path(__file__).parent / "data" / f"{mode}-results.json.gz"
    results = json.loads(gzip.decompress(stored.read_bytes()))
    lt = results["experiments"]["layer-table"]
    rendered = layer_table.table(lt)
    assert [r[0] for r in rendered["rows"]] == LAYERS
    for run in lt["runs"]["init"]:
        assert all(0 < run[f"dw/w {n}"] <= LR * TRUST * (1 + 1e-6) for n in LAYERS)
        assert all(run[f"trust {n}"] > 0 for n in LAYERS)
    assert lt["comparisons"][1]["in_verdict"] is False
    mech = results["experiments"]["warmup"]["extra"]["data"]
    radam = mech["relative_variance"]["radam"]
    for t, value in zip(mech["steps"], radam, strict=True):
        assert (value == 0.0) == (rectifier(t, BETA2) == 0.0), t
