"""Every invalid input raises an error that names the argument and the value."""

from __future__ import annotations

import math

import pytest
import torch

import rangerlab
from optim_table import make_params, run
from rangerlab import create_optimizer, list_optimizers
from rangerlab._validation import RULES
from rangerlab.factory import optimizer_info
from rangerlab.optim.chain import declared_hyperparams
from rangerlab.transforms import add_decayed_weights, scale_by_adam
from reference import RefLARS

#: Every name of the factory's registry (the one list of optimizer names).
OPTIMIZERS = {
    name: lambda p, name=name, **kw: create_optimizer(p, name, **kw) for name in list_optimizers()
}


def accepts(name: str) -> set[str]:
    """The settings ``name`` takes: what its chain's transforms declare, plus ``lr``."""
    opt = OPTIMIZERS[name](make_params())
    declared = declared_hyperparams(opt.chain_for(opt.param_groups[0]))
    return ({"lr", *declared} - set(optimizer_info(name).fixed)) & set(
        optimizer_info(name).hyperparameters()
    )


ACCEPTS = {name: accepts(name) for name in OPTIMIZERS}
BAD = [
    ("lr", -0.1),
    ("lr", math.nan),
    ("weight_decay", -1e-4),
    ("weight_decay", math.nan),
    ("betas", (1.0, 0.999)),
    ("betas", (0.9, -0.1)),
    ("betas", (0.9, math.nan)),
    ("betas", 0.9),
    ("eps", -1e-8),
    ("momentum", -0.9),
    ("trust_coefficient", 0.0),
    ("trust_coefficient", -1.0),
    ("k", 0),
    ("k", -3),
    ("k", 2.0),
    ("k", True),
    ("alpha", 0.0),
    ("alpha", 1.5),
    ("alpha", math.nan),
    ("max_weight_norm", 0.0),
]
CASES = [
    (name, key, value) for key, value in BAD for name in sorted(ACCEPTS) if key in ACCEPTS[name]
]


def test_the_table_derives_what_each_optimizer_accepts():
    assert ACCEPTS["lamb"] == {"lr", "betas", "eps", "weight_decay", "max_weight_norm", "gc"}
    assert ACCEPTS["lars"] >= {"momentum", "trust_coefficient", "eps", "weight_decay"}
    assert {"k", "alpha"} <= ACCEPTS["ranger"] and "k" not in ACCEPTS["adam"]
    assert all(any(key in keys for keys in ACCEPTS.values()) for key, _ in BAD)


def test_every_declared_hyperparameter_has_a_validation_rule():
    for name in OPTIMIZERS:
        opt = OPTIMIZERS[name](make_params())
        declared = declared_hyperparams(opt.chain_for(opt.param_groups[0]))
        assert set(declared) <= set(RULES), name


@pytest.mark.parametrize(("name", "key", "value"), CASES, ids=[f"{n}-{k}={v}" for n, k, v in CASES])
def test_invalid_hyperparameter_names_argument_and_value(name, key, value):
    with pytest.raises(ValueError) as info:
        OPTIMIZERS[name](make_params(), **{key: value})
    message = str(info.value)
    assert key in message and repr(value) in message


@pytest.mark.parametrize("name", sorted(n for n in ACCEPTS if "nesterov" in ACCEPTS[n]))
def test_nesterov_needs_momentum(name):
    with pytest.raises(ValueError, match="nesterov"):
        OPTIMIZERS[name](make_params(), momentum=0.0, nesterov=True)
    with pytest.raises(ValueError, match="nesterov"):
        OPTIMIZERS[name](make_params(), momentum=0.9, dampening=0.1, nesterov=True)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_invalid_value_in_a_param_group_is_refused(name):
    params = make_params()
    opt = OPTIMIZERS[name](params[:2])
    with pytest.raises(ValueError, match="lr: -1"):
        opt.add_param_group({"params": params[2:], "lr": -1})
    assert len(opt.param_groups) == 1
    with pytest.raises(ValueError, match="weight_decay: -0.5"):
        OPTIMIZERS[name]([{"params": params[:2], "weight_decay": -0.5}])


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_sparse_gradients_are_refused(name):
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = OPTIMIZERS[name](emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    before = emb.weight.detach().clone()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    assert torch.equal(emb.weight.detach(), before)


def test_lr_has_defaults_and_groups_may_each_carry_their_own():
    """As torch.optim.SGD: ``lr`` defaults to 1e-3; groups that each set ``lr`` need no other."""
    torch_default = torch.optim.SGD(make_params()).defaults["lr"]
    assert rangerlab.SGD(make_params()).defaults["lr"] == torch_default
    assert rangerlab.LARS(make_params()).defaults["lr"] == 1.0
    for ours, ref in ((rangerlab.SGD, torch.optim.SGD), (rangerlab.LARS, RefLARS)):
        a, b = make_params(), make_params()
        opt_a = ours([{"params": a[:3], "lr": 0.1}, {"params": a[3:], "lr": 0.02}], momentum=0.9)
        opt_b = ref([{"params": b[:3], "lr": 0.1}, {"params": b[3:], "lr": 0.02}], momentum=0.9)
        run(opt_a, a, 5)
        run(opt_b, b, 5)
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)


def test_fused_and_foreach_together_are_refused():
    with pytest.raises(ValueError, match="fused.*foreach"):
        rangerlab.Adam(make_params(), fused=True, foreach=True)


def test_a_callable_transforms_spec_is_validated_at_construction():
    """As for a sequence: an unknown setting is refused before any step, naming it."""
    params = make_params()
    with pytest.raises(TypeError, match="betas2"):
        rangerlab.Chain(params, lambda g: [scale_by_adam()], lr=0.1, betas2=5)
    with pytest.raises(ValueError, match="betas"):
        rangerlab.Chain(params, lambda g: [scale_by_adam()], lr=0.1, betas=(0.9, 5))
    # The keys the function reads to choose its links are settings; declared defaults fill in.
    opt = rangerlab.Chain(
        params,
        lambda g: [scale_by_adam(), add_decayed_weights()] if g["decay"] else [scale_by_adam()],
        lr=0.1,
        decay=True,
    )
    assert opt.param_groups[0]["betas"] == (0.9, 0.999) and opt.param_groups[0]["decay"]
    with pytest.raises(TypeError, match="'decay'"):
        rangerlab.Chain(params, lambda g: [scale_by_adam()] * g["decay"], lr=0.1)
    run(opt, params, 2)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_duplicate_parameters_are_refused_naming_their_positions(name):
    params = make_params()
    with pytest.raises(ValueError, match="positions 0 and 2"):
        OPTIMIZERS[name]([params[0], params[1], params[0]])
    opt = OPTIMIZERS[name](params[:2])
    with pytest.raises(ValueError, match="parameter group 1 .* positions 1 and 2"):
        opt.add_param_group({"params": [params[2], params[3], params[3]]})
    assert len(opt.param_groups) == 1
    wrapper = rangerlab.Lookahead(torch.optim.SGD(params[:2], lr=0.1))
    with pytest.raises(ValueError, match="positions 0 and 1"):
        wrapper.add_param_group({"params": [params[2], params[2]]})
