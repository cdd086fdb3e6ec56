"""The factory: names, conventional param groups, hyperparameter checks, and trajectories.

Trajectories are compared in float64 against torch.optim where torch has the algorithm, and
against the exact LAMB formula for LAMB (new here).
"""

import pytest
import torch
from torch import nn

import rangerlab
from rangerlab import LAMB, create_optimizer, list_optimizers, param_groups

REQUIRED = ["sgd", "adam", "adamw", "radam", "lars", "larc", "lamb", "ranger", "ranger_lars"]
LAYER_WISE = {"lars", "larc", "lamb", "ranger_lars"}


class Net(nn.Module):
    """Conv, linear, norm, a 2-D embedding excluded by ``no_weight_decay``, a frozen tensor."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 2)
        self.pos_embed = nn.Parameter(torch.randn(5, 4))
        self.frozen = nn.Parameter(torch.randn(3, 3), requires_grad=False)

    def no_weight_decay(self):
        return {"pos_embed"}


def trajectory(opt, params, steps=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        opt.step()
    return [p.detach().clone() for p in params]


def fresh_params(seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [
        nn.Parameter(torch.randn(4, 3, generator=gen, dtype=torch.float64)),
        nn.Parameter(torch.randn(3, generator=gen, dtype=torch.float64)),
    ]


def test_list_optimizers_names_and_one_line_descriptions():
    names = list_optimizers()
    assert set(REQUIRED) <= set(names)
    for name, text in names.items():
        assert text and "\n" not in text, name


@pytest.mark.parametrize(
    "name, reference, kwargs",
    [
        ("sgd", torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
        ("adam", torch.optim.Adam, dict(lr=0.01, weight_decay=0.1)),
        ("adamw", torch.optim.AdamW, dict(lr=0.01, weight_decay=0.1)),
        ("radam", torch.optim.RAdam, dict(lr=0.01, weight_decay=0.1)),
    ],
)
def test_names_follow_torch_trajectories(name, reference, kwargs):
    ours, theirs = fresh_params(), fresh_params()
    got = trajectory(create_optimizer(ours, name, **kwargs), ours)
    want = trajectory(reference(theirs, **kwargs), theirs)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "name, direct",
    [
        ("lars", lambda p: rangerlab.LARS(p, lr=0.1, weight_decay=0.01)),
        ("larc", lambda p: rangerlab.LARS(p, lr=0.1, weight_decay=0.01, clip=True)),
        ("ranger", lambda p: rangerlab.Ranger(p, lr=0.1, weight_decay=0.01)),
        ("ranger_lars", lambda p: rangerlab.RangerLARS(p, lr=0.1, weight_decay=0.01)),
    ],
)
def test_names_build_the_documented_presets(name, direct):
    ours, theirs = fresh_params(), fresh_params()
    opt = create_optimizer(ours, name, lr=0.1, weight_decay=0.01)
    assert type(opt) is type(direct(fresh_params()))
    got = trajectory(opt, ours)
    want = trajectory(direct(theirs), theirs)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=0)
    if name in ("lars", "larc"):
        assert opt.defaults["clip"] is (name == "larc")


def lamb_reference(params, steps, lr, betas, eps, wd, cap, seed=0):
    """LAMB by its formula, tensor by tensor (You et al. 2020, Algorithm 2)."""
    gen = torch.Generator().manual_seed(seed)
    b1, b2 = betas
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    w = [p.detach().clone() for p in params]
    for t in range(1, steps + 1):
        for i, p in enumerate(params):
            g = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            u = (m[i] / (1 - b1**t)) / ((v[i] / (1 - b2**t)).sqrt() + eps) + wd * w[i]
            ratio = min(w[i].norm().item(), cap) / u.norm().item()
            w[i] = w[i] - lr * ratio * u
    return w


def test_lamb_follows_its_formula():
    ours = fresh_params()
    got = trajectory(create_optimizer(ours, "lamb", lr=0.05, weight_decay=0.1), ours)
    want = lamb_reference(fresh_params(), 12, 0.05, (0.9, 0.999), 1e-6, 0.1, 10.0)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)


def test_lamb_without_trust_ratio_is_adamw():
    ours, theirs = fresh_params(), fresh_params()
    opt = LAMB([{"params": ours, "trust_ratio": False}], lr=0.01, weight_decay=0.1)
    got = trajectory(opt, ours)
    want = trajectory(torch.optim.AdamW(theirs, lr=0.01, eps=1e-6, weight_decay=0.1), theirs)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", REQUIRED)
def test_module_gets_the_conventional_groups(name):
    torch.manual_seed(0)
    model = Net()
    opt = create_optimizer(model, name, lr=0.1, weight_decay=0.05)
    decay, quiet = opt.param_groups
    ids = lambda group: {id(p) for p in group["params"]}  # noqa: E731
    assert ids(decay) == {id(model.conv.weight), id(model.head.weight)}
    no_decay = [model.conv.bias, model.norm.weight, model.norm.bias, model.head.bias]
    assert ids(quiet) == {id(p) for p in [*no_decay, model.pos_embed]}
    assert decay["weight_decay"] == 0.05 and quiet["weight_decay"] == 0.0
    if name in LAYER_WISE:
        assert decay["trust_ratio"] is True and quiet["trust_ratio"] is False
    else:
        assert "trust_ratio" not in quiet


def test_lars_bias_steps_without_trust_ratio_or_decay():
    bias = nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
    model = nn.Module()
    model.bias = bias
    model.weight = nn.Parameter(torch.ones(2, 2, dtype=torch.float64))
    opt = create_optimizer(model, "lars", lr=0.5, weight_decay=0.1)
    bias.grad = torch.tensor([1.0, -2.0], dtype=torch.float64)
    model.weight.grad = torch.ones(2, 2, dtype=torch.float64)
    opt.step()
    # First LARS step without trust and decay is plain SGD: w - lr*g.
    torch.testing.assert_close(bias.detach(), torch.tensor([0.5, 3.0], dtype=torch.float64))
    # The weight does get the trust ratio: 0.001*||w||/(||g|| + 0.1||w||) * (g + 0.1 w).
    trust = 0.001 * 2.0 / (2.0 + 0.2 + 1e-8)
    want = torch.full((2, 2), 1.0 - 0.5 * trust * 1.1, dtype=torch.float64)
    torch.testing.assert_close(model.weight.detach(), want)


def test_no_weight_decay_matches_names_and_dotted_prefixes():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    groups = param_groups(model, 0.1, no_weight_decay={"1"})
    assert [p for g in groups if g["weight_decay"] for p in g["params"]] == [model[0].weight]
    groups = param_groups(model, 0.1, no_weight_decay={"1.we"})  # not a dotted prefix
    assert {id(p) for p in groups[0]["params"]} == {id(model[0].weight), id(model[1].weight)}


def test_param_groups_skip_frozen_and_empty_groups():
    model = nn.Linear(3, 3, bias=False)
    assert param_groups(model, 0.1) == [{"params": [model.weight], "weight_decay": 0.1}]
    model.weight.requires_grad_(False)
    assert param_groups(model, 0.1) == []


def test_lookahead_wraps_any_name():
    ours, theirs = fresh_params(), fresh_params()
    opt = create_optimizer(ours, "adamw", lr=0.01, weight_decay=0.1, lookahead=True, k=3, alpha=0.6)
    assert isinstance(opt, rangerlab.Lookahead)
    assert opt.param_groups[0]["k"] == 3 and opt.param_groups[0]["alpha"] == 0.6
    got = trajectory(opt, ours)
    ref = rangerlab.Lookahead(torch.optim.AdamW(theirs, lr=0.01, weight_decay=0.1), k=3, alpha=0.6)
    want = trajectory(ref, theirs)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)


def test_user_params_are_used_as_given():
    groups = [{"params": fresh_params()[:1], "lr": 0.5}, {"params": fresh_params()[1:]}]
    opt = create_optimizer(groups, "adam", lr=0.1, weight_decay=0.2)
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.1]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.2, 0.2]


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="Unknown optimizer name: 'adamax'.*ranger_lars"):
        create_optimizer(fresh_params(), "adamax")


@pytest.mark.parametrize(
    "name, kwargs, bad",
    [
        ("adam", {"momentum": 0.9}, "momentum"),
        ("adamw", {"decoupled_weight_decay": False}, "decoupled_weight_decay"),
        ("larc", {"lr": 0.1, "clip": False}, "clip"),
        ("adam", {"k": 3}, "k"),
    ],
)
def test_unknown_hyperparameters_list_valid_ones(name, kwargs, bad):
    with pytest.raises(TypeError, match=f"Unknown hyperparameter.*{bad}; valid: .*betas|lr"):
        create_optimizer(fresh_params(), name, **kwargs)


def test_bad_values_are_refused_with_the_argument_named():
    with pytest.raises(ValueError, match="weight_decay: -0.1"):
        create_optimizer(Net(), "adamw", weight_decay=-0.1)
    with pytest.raises(ValueError, match="lookahead: 'yes'"):
        create_optimizer(fresh_params(), "adam", lookahead="yes")
    with pytest.raises(ValueError, match="already includes Lookahead"):
        create_optimizer(fresh_params(), "ranger", lookahead=True)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        param_groups(fresh_params(), 0.1)
    with pytest.raises(TypeError, match="collection of names"):
        param_groups(Net(), 0.1, no_weight_decay="pos_embed")
