"""Pieces of the experiments checked against exact values."""

import math

import pytest
import torch

from rangerlab.lab.experiments.amp import FP16_MIN_SUBNORMAL, fp16_fractions, saved_bytes
from rangerlab.lab.experiments.layer_table import layer_norms
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


def test_layer_norms_measures_sgd_without_changing_the_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 3), torch.tensor([0, 1] * 4)
    before = [p.detach().clone() for p in model.parameters()]
    table = layer_norms(model, opt, x, y)
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    assert all(p.grad is None for p in model.parameters())
    for row in table.values():  # plain SGD: ||update|| = lr ||g||
        assert row["update"] == pytest.approx(0.1 * row["grad"], rel=1e-5)
        assert row["ratio"] == pytest.approx(row["update"] / row["weight"])
        assert row["trust"] == pytest.approx(
            1e-3 * row["weight"] / (row["grad"] + 5e-4 * row["weight"])
        )
    assert not math.isnan(table["0.weight"]["ratio"])


def test_steps_to_min_is_the_step_from_which_the_run_stays_below_tolerance():
    from rangerlab.lab.experiments.race import TOL, _steps_to_min

    nan = float("nan")
    gap = torch.tensor(
        [[1.0, 1.0, 1.0, 1.0], [TOL / 2, TOL / 2, nan, 1.0], [TOL / 2, 1.0, nan, TOL / 3]]
    )
    # arrives at 1 and stays; passes through and leaves; diverges; arrives at the last step
    assert _steps_to_min(gap) == [1, None, None, 2]
