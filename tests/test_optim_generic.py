"""Generic checks run over every optimizer and setting in ``optim_table.CASES``."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch

import rangerlab
from optim_table import CASES, Case, make_params, run, set_grads, torch_target, with_path
from reference import RefLARS, RefLookahead, RefRAdamLAMB

STEPS = 64  # > 60, with syncs at k = 4, 5, 6 and well past RAdam's rho_t > 5 switch
RTOL, ATOL = 1e-9, 1e-12

cases = pytest.mark.parametrize("case", CASES, ids=str)


def assert_params_close(ours, ref, rtol=RTOL, atol=ATOL):
    for i, (a, b) in enumerate(zip(ours, ref)):
        torch.testing.assert_close(
            a.detach(), b.detach(), rtol=rtol, atol=atol, msg=lambda m, i=i: f"param {i}: {m}"
        )


def snapshot(opt):
    """A deep copy of everything a step could change: params, state, group settings."""
    return copy.deepcopy(
        ([p.detach().clone() for g in opt.param_groups for p in g["params"]], opt.state_dict())
    )


def assert_same_snapshot(a, b):
    (pa, sa), (pb, sb) = a, b
    for x, y in zip(pa, pb):
        assert torch.equal(x, y)
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for key in sa["state"]:
        assert sa["state"][key].keys() == sb["state"][key].keys()
        for name, value in sa["state"][key].items():
            other = sb["state"][key][name]
            assert torch.equal(value, other) if torch.is_tensor(value) else value == other


@cases
@pytest.mark.parametrize("path", ["default", "foreach"])
def test_trajectory_matches_reference(case: Case, path: str):
    """The default path (the fused kernels on CPU) and the foreach reference path both match."""
    ours_p, ref_p = make_params(), make_params()
    ours = case.ours(ours_p)
    if path == "foreach":
        for group in ours.param_groups:
            group["foreach"] = True
    run(ours, ours_p, STEPS)
    run(case.ref(ref_p), ref_p, STEPS)
    assert_params_close(ours_p, ref_p)
    assert not torch.equal(ours_p[0].detach(), make_params()[0].detach())


@cases
def test_foreach_path_equals_per_tensor_path(case: Case):
    runs = []
    for foreach in (True, False):
        params = make_params()
        opt = case.ours(params)
        for group in opt.param_groups:
            group["foreach"] = foreach
        run(opt, params, 20)
        runs.append(params)
    assert_params_close(*runs, rtol=1e-12, atol=1e-14)


@cases
def test_none_grad_is_a_no_op_for_that_tensor(case: Case):
    params, ref_p = make_params(), make_params()
    opt = case.ours(params)
    skip = lambda t: (0, 3) if t % 3 == 1 else (1,)  # noqa: E731
    run(opt, params, 20, skip_at=skip)
    run(case.ref(ref_p), ref_p, 20, skip_at=skip)
    assert_params_close(params, ref_p)
    # A tensor that never has a gradient is never touched and gets no state.
    params = make_params()
    opt = case.ours(params)
    run(opt, params, 8, skip_at=lambda t: (1,))
    assert torch.equal(params[1].detach(), make_params()[1].detach())
    assert params[1] not in opt.state or not opt.state[params[1]]


@cases
def test_zero_dim_and_empty_params_step_without_nan(case: Case):
    params = [
        torch.nn.Parameter(torch.tensor(0.7, dtype=torch.float64)),
        torch.nn.Parameter(torch.zeros(0, dtype=torch.float64)),
        torch.nn.Parameter(torch.zeros(3, 0, dtype=torch.float64)),
        torch.nn.Parameter(torch.zeros((), dtype=torch.float64)),
    ]
    opt = case.ours(params)
    for _ in range(8):
        for p in params:
            p.grad = torch.full_like(p, 0.5)
        opt.step()
    assert all(torch.isfinite(p).all() for p in params)
    assert params[0].item() != 0.7


@cases
def test_grad_is_not_modified(case: Case):
    params = make_params()
    opt = case.ours(params)
    for _ in range(7):
        set_grads(params)
        grads = [p.grad for p in params]
        before = [g.clone() for g in grads]
        opt.step()
        assert all(p.grad is g for p, g in zip(params, grads))
        assert all(torch.equal(g, b) for g, b in zip(grads, before))


@cases
@pytest.mark.parametrize("stop_at", [0, 9])
def test_state_dict_round_trip_resumes_bit_identically(case: Case, stop_at: int):
    params = make_params()
    opt = case.ours(params)
    run(opt, params, stop_at)
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in params], "opt": opt.state_dict()}, buffer)
    run(opt, params, 14)

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = [torch.nn.Parameter(x.clone()) for x in saved["params"]]
    opt2 = case.ours(resumed)
    opt2.load_state_dict(saved["opt"])
    run(opt2, resumed, 14)
    for a, b in zip(params, resumed):
        assert torch.equal(a.detach(), b.detach())


@pytest.mark.parametrize("case", with_path("fused"), ids=str)
@pytest.mark.parametrize("shape", [(), (1,), (1, 1)], ids=str)
@pytest.mark.parametrize("path", ["default", "foreach", "loop"])
def test_one_element_tensor_lr_on_every_path(case: Case, shape, path: str):
    """Every one-element ``lr`` that validation accepts works on every path, as a float does."""
    runs = []
    for lr in (
        case.kwargs.get("lr", 1e-3),
        torch.full(shape, case.kwargs.get("lr", 1e-3), dtype=torch.float64),
    ):
        params = make_params()
        opt = case.ours(params)
        for group in opt.param_groups:
            group["lr"] = lr
            group["foreach"] = {"default": None, "foreach": True, "loop": False}[path]
        run(opt, params, 8)
        runs.append(params)
    assert_params_close(*runs, rtol=1e-12, atol=1e-14)


@cases
def test_state_dict_whose_step_is_a_python_number_loads_and_continues(case: Case):
    """Older torch and other libraries save ``step`` as a number; torch loads and continues."""
    params = make_params()
    opt = case.ours(params)
    run(opt, params, 7)
    saved = copy.deepcopy(opt.state_dict())
    for entry in saved["state"].values():
        if "step" in entry:
            entry["step"] = int(entry["step"])
    resumed = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt2 = case.ours(resumed)
    opt2.load_state_dict(saved)
    run(opt, params, 9)
    run(opt2, resumed, 9)
    for a, b in zip(params, resumed):
        assert torch.equal(a.detach(), b.detach())
    assert all(torch.is_tensor(s["step"]) for s in opt2.state.values() if "step" in s)


@cases
def test_param_groups_with_different_hyperparameters(case: Case):
    def groups(params):
        lr = case.kwargs.get("lr", 1e-3)
        return [
            {"params": params[:3], "lr": lr * 0.5, "weight_decay": 0.05},
            {"params": params[3:]},
        ]

    ours_p, ref_p = make_params(), make_params()
    run(case.ours(groups(ours_p)), ours_p, 30)
    run(case.ref(groups(ref_p)), ref_p, 30)
    assert_params_close(ours_p, ref_p)


@cases
def test_add_param_group_mid_run(case: Case):
    ours_p, ref_p = make_params(), make_params()
    ours, ref = case.ours(ours_p[:4]), case.ref(ref_p[:4])
    run(ours, ours_p, 7, skip_at=lambda t: (4, 5))
    run(ref, ref_p, 7, skip_at=lambda t: (4, 5))
    lr = case.kwargs.get("lr", 1e-3) * 2
    ours.add_param_group({"params": ours_p[4:], "lr": lr})
    ref.add_param_group({"params": ref_p[4:], "lr": lr})
    run(ours, ours_p, 20)
    run(ref, ref_p, 20)
    assert_params_close(ours_p, ref_p)
    assert ours.param_groups[1]["lr"] == lr


@cases
def test_lr_scheduler_drives_the_groups(case: Case):
    ours_p, ref_p = make_params(), make_params()
    ours, ref = case.ours(ours_p), case.ref(ref_p)
    s_ours = torch.optim.lr_scheduler.LambdaLR(ours, lambda t: 0.93**t)
    s_ref = torch.optim.lr_scheduler.LambdaLR(torch_target(ref), lambda t: 0.93**t)
    for _ in range(25):
        run(ours, ours_p, 1)
        run(ref, ref_p, 1)
        s_ours.step()
        s_ref.step()
    assert_params_close(ours_p, ref_p)
    assert ours.param_groups[0]["lr"] == pytest.approx(case.kwargs.get("lr", 1e-3) * 0.93**25)


def _scaled_backward(params, scaler):
    loss = sum(((p - 0.3) ** 2).sum() + p.sum() * 0.1 for p in params)
    scaler.scale(loss).backward()


@cases
def test_step_skipped_by_grad_scaler_changes_nothing(case: Case):
    params = make_params()
    opt = case.ours(params)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    for _ in range(5):
        opt.zero_grad()
        _scaled_backward(params, scaler)
        scaler.step(opt)
        scaler.update()
    before = snapshot(opt)
    opt.zero_grad()
    _scaled_backward(params, scaler)
    params[0].grad[0, 0] = float("inf")
    params[3].grad.view(-1)[1] = float("nan")
    scaler.step(opt)
    scaler.update()
    assert_same_snapshot(before, snapshot(opt))
    assert scaler.get_scale() == 2.0**7


@cases
def test_grad_scaler_steps_on_unscaled_gradients(case: Case):
    """Scaling the loss by 2^k and unscaling is exact, so the trajectory must not change."""
    runs = []
    for scale in (1.0, 2.0**12):
        params = make_params()
        opt = case.ours(params)
        scaler = torch.amp.GradScaler("cpu", init_scale=scale, growth_interval=10**6)
        for _ in range(12):
            opt.zero_grad()
            _scaled_backward(params, scaler)
            scaler.step(opt)
            scaler.update()
        runs.append(params)
    assert_params_close(*runs, rtol=1e-12, atol=1e-14)


@cases
def test_closure_runs_with_grad_enabled_and_returns_loss(case: Case):
    params = make_params()
    opt = case.ours(params)

    def closure():
        assert torch.is_grad_enabled()
        opt.zero_grad()
        loss = sum(((p - 1.0) ** 2).sum() for p in params)
        loss.backward()
        return loss

    with torch.no_grad():
        loss = opt.step(closure)
    assert torch.is_tensor(loss) and loss.item() > 0
    assert not torch.equal(params[0].detach(), make_params()[0].detach())


@cases
def test_step_hooks_and_pickling(case: Case):
    params = make_params()
    opt = case.ours(params)
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    run(opt, params, 2)
    assert calls == ["pre", "post", "pre", "post"]
    clone = pickle.loads(pickle.dumps((params, opt)))
    cloned_params, cloned_opt = clone
    run(opt, params, 7)
    run(cloned_opt, cloned_params, 7)
    for a, b in zip(params, cloned_params):
        assert torch.equal(a.detach(), b.detach())


@cases
def test_bfloat16_params_keep_float32_state(case: Case):
    params = make_params(torch.bfloat16)
    opt = case.ours(params)
    if case.name.startswith("lookahead-"):
        run(opt, params, 7)
        slow = opt.state[params[0]]["slow_param"]
        assert slow.dtype == torch.float32
        return
    run(opt, params, 7)
    for p in params:
        assert p.dtype == torch.bfloat16 and torch.isfinite(p.float()).all()
        for name, value in opt.state[p].items():
            if torch.is_tensor(value) and name != "step":
                assert value.dtype == torch.float32, name
    # State stays float32 through a state_dict round trip (torch's loader would round to bf16).
    opt2 = case.ours(params)
    opt2.load_state_dict(opt.state_dict())
    for name, value in opt2.state[params[0]].items():
        if name != "step":
            assert value.dtype == torch.float32
            assert torch.equal(value, opt.state[params[0]][name])


@cases
def test_load_state_dict_that_does_not_fit_changes_nothing(case: Case):
    params = make_params()
    opt = case.ours(params)
    run(opt, params, 3)
    before = snapshot(opt)
    good = opt.state_dict()

    other = make_params()[:3]
    small = case.ours(other)
    run(small, other, 2)
    with pytest.raises(ValueError, match="parameter"):
        opt.load_state_dict(small.state_dict())

    with pytest.raises(ValueError, match="state"):
        opt.load_state_dict({"param_groups": good["param_groups"]})

    reshaped = [
        torch.nn.Parameter(torch.ones(s, dtype=torch.float64))
        for s in [(3, 4), (3,), (), (2, 3, 2, 2), (0,), (5, 2)]
    ]
    wrong = case.ours(reshaped)
    for p in reshaped:
        p.grad = torch.full_like(p, 0.1)
    wrong.step()
    elementwise = [
        name for entry in wrong.state_dict()["state"].values() for name in entry if name != "step"
    ]
    if elementwise:  # plain SGD keeps no per-element state, so any shape fits it
        with pytest.raises(ValueError, match="shape"):
            opt.load_state_dict(wrong.state_dict())
    assert_same_snapshot(before, snapshot(opt))


def test_torch_adam_state_dict_loads_into_rangerlab_adam():
    """Same state names as torch (step, exp_avg, exp_avg_sq): a torch checkpoint resumes here."""
    a, b = make_params(), make_params()
    torch_opt = torch.optim.Adam(a, lr=1e-2)
    run(torch_opt, a, 5)
    ours = rangerlab.Adam(b, lr=1e-2)
    for x, y in zip(a, b):
        y.data.copy_(x.data)
    ours.load_state_dict(torch_opt.state_dict())
    run(torch_opt, a, 10)
    run(ours, b, 10)
    assert_params_close(b, a)


@pytest.mark.parametrize(
    ("ours", "ref"),
    [
        (
            lambda g: rangerlab.LARS(g, lr=0.5, trust_coefficient=0.02, weight_decay=1e-3),
            lambda g: RefLARS(g, lr=0.5, trust_coefficient=0.02, weight_decay=1e-3),
        ),
        (
            lambda g: rangerlab.RangerLARS(g, lr=1e-2, weight_decay=0.1, gc=False),
            lambda g: RefLookahead(RefRAdamLAMB(g, lr=1e-2, weight_decay=0.1), 6, 0.5),
        ),
    ],
    ids=["lars", "ranger_lars"],
)
def test_groups_without_trust_ratio_skip_the_layer_wise_scaling(ours, ref):
    """The SimCLR convention: biases and norm weights in a group with trust_ratio=False."""

    def groups(params):
        plain = {"params": params[1:3], "weight_decay": 0.0, "trust_ratio": False}
        return [{"params": params[:1] + params[3:]}, plain]

    a, b = make_params(), make_params()
    run(ours(groups(a)), a, 40)
    run(ref(groups(b)), b, 40)
    assert_params_close(a, b)
