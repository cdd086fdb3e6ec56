"""The fused fast path equals the reference path (foreach and per-tensor) on the generic cases."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import rangerlab
from optim_table import PATHS, with_path
from rangerlab import bench, fused, list_optimizers
from rangerlab.factory import optimizer_info
from rangerlab.transforms import centralize, lookahead, scale_by_adam, scale_by_trust_ratio

pytestmark = pytest.mark.skipif(not fused.available(), reason="no C++ compiler for the kernels")

# 0-d, empty, 1-D, linear and conv tensors; GC rows of 1, 7, 27 and 50 elements.
SHAPES = [(), (0,), (5,), (4, 7), (6, 3, 3, 3), (3, 1), (40, 50)]
# GC rows of 2,503 elements: longer than a span of the row sums (kSumSpan), 13 rows to a
# 32,768-element task, so that the Adam family's kernels read ahead into the next task's first
# row. A table of its own: the Triton tests share SHAPES, and the interpreter is slow.
LONG_ROW_SHAPES = [*SHAPES[:4], (14, 2503)]

# The one table of cases (optim_table.py): every case that has the fused path, with the
# overrides it gives a second param group.
CASES = with_path("fused")
cases = pytest.mark.parametrize("case", CASES, ids=str)


def case_named(name):
    """The case of the table called ``name``."""
    return next(c for c in CASES if c.name == name)


def make_params(dtype, seed=0, shapes=SHAPES):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in shapes]


def trajectory(case, dtype, steps=14, shapes=SHAPES, **path):
    """Run ``steps`` steps with two param groups, a parameter without gradient, fixed seeds."""
    params = make_params(dtype, shapes=shapes)
    groups = [{"params": params[:4]}, {"params": params[4:], **case.second}]
    opt = case.ours(groups, **path)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for i, p in enumerate(params):
            p.grad = None if i == 3 else torch.randn(p.shape, generator=gen, dtype=dtype)
        opt.step()
    return params, opt


def assert_same(a_params, a_opt, b_params, b_opt, rtol):
    for pa, pb in zip(a_params, b_params, strict=True):
        assert _rel(pa, pb) <= rtol
        sa, sb = a_opt.state.get(pa, {}), b_opt.state.get(pb, {})
        assert sorted(sa) == sorted(sb)
        for key in sa:
            assert _rel(sa[key], sb[key]) <= rtol, key
    assert [g.get("lookahead_step") for g in a_opt.param_groups] == [
        g.get("lookahead_step") for g in b_opt.param_groups
    ]


def _rel(x, y):
    """Norm-wise relative difference (exactly 0 for empty tensors)."""
    x, y = x.detach().double(), y.detach().double()
    return float((x - y).norm() / y.norm().clamp_min(1e-30))


@cases
@pytest.mark.parametrize("reference", ["foreach", "loop"])
def test_fused_equals_reference_float32(case, reference):
    fast = trajectory(case, torch.float32, **PATHS["fused"])
    ref = trajectory(case, torch.float32, **PATHS[reference])
    assert_same(*fast, *ref, rtol=1e-6)


@cases
def test_fused_equals_reference_float64(case):
    fast = trajectory(case, torch.float64, **PATHS["fused"])
    ref = trajectory(case, torch.float64, **PATHS["loop"])
    assert_same(*fast, *ref, rtol=1e-13)


@cases
@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-6), (torch.float64, 1e-13)])
def test_fused_equals_reference_on_long_gc_rows(case, dtype, rtol):
    fast = trajectory(case, dtype, shapes=LONG_ROW_SHAPES, **PATHS["fused"])
    ref = trajectory(case, dtype, shapes=LONG_ROW_SHAPES, **PATHS["loop"])
    assert_same(*fast, *ref, rtol=rtol)


@pytest.mark.parametrize("master_weights", [False, True])
@pytest.mark.parametrize("name", ["ranger", "lars"])
def test_bf16_params(name, master_weights):
    case = next(c for c in CASES if c.name == name)
    fast = trajectory(case, torch.bfloat16, fused=True, master_weights=master_weights)
    ref = trajectory(case, torch.bfloat16, foreach=True, master_weights=master_weights)
    for pf, pr in zip(fast[0], ref[0], strict=True):
        assert pf.dtype == torch.bfloat16
        torch.testing.assert_close(pf, pr, rtol=1e-2, atol=1e-2)
    states = [s for s in fast[1].state.values() if "exp_avg" in s or "momentum_buffer" in s]
    assert states and all(
        v.dtype == torch.float32 for s in states for k, v in s.items() if k != "step"
    )


def test_every_registered_optimizer_is_in_the_fused_table():
    built = {type(case.ours(make_params(torch.float32))) for case in CASES}
    assert {info.cls for info in map(optimizer_info, list_optimizers())} <= built


def test_matches_torch_adam_and_radam_float64():
    for ours, theirs in ((rangerlab.Adam, torch.optim.Adam), (rangerlab.RAdam, torch.optim.RAdam)):
        a, b = make_params(torch.float64), make_params(torch.float64)
        opt_a = ours(a, lr=1e-2, weight_decay=0.1, fused=True)
        opt_b = theirs(b, lr=1e-2, weight_decay=0.1)
        gen = torch.Generator().manual_seed(3)
        for _ in range(9):  # past RAdam's switch to the rectified step (rho_t > 5 from step 6)
            for pa, pb in zip(a, b, strict=True):
                pa.grad = torch.randn(pa.shape, generator=gen, dtype=torch.float64)
                pb.grad = pa.grad.clone()
            opt_a.step()
            opt_b.step()
        for pa, pb in zip(a, b, strict=True):
            assert _rel(pa, pb) <= 1e-13


@pytest.mark.parametrize("telemetry", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cls", [rangerlab.Ranger, rangerlab.RangerLARS])
def test_a_gc_row_steps_the_same_wherever_its_mean_is_taken(cls, dtype, telemetry):
    """The Adam family's kernels take a row's GC mean in a pass of its own (a task's first row)
    or inside the previous row's loop (the others): in the same order, so identical rows step
    bit for bit identically, on either side of a task boundary (13 rows of 2,503 to a task)."""
    gen = torch.Generator().manual_seed(5)
    row = torch.randn(2503, generator=gen, dtype=dtype)
    p = torch.nn.Parameter(row.repeat(30, 1))
    opt = cls([p], lr=1e-2, fused=True, telemetry=telemetry)
    for _ in range(7):  # past a Lookahead sync (k = 6)
        # an offset, so that the row sums round differently in another order
        g = 3.0 + torch.randn(2503, generator=gen, dtype=dtype)
        p.grad = g.repeat(30, 1)
        opt.step()
    assert all(torch.equal(p[i], p[0]) for i in range(1, 30))


@pytest.mark.parametrize("alpha", [0.3, 0.6])  # torch's lerp: the two formulas
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cls", [rangerlab.Ranger, rangerlab.RangerLARS])
def test_recording_changes_no_bit_on_long_gc_rows(cls, dtype, alpha):
    """The recorded kernels (telemetry's sums; the Lookahead sync on whole vectors, its formula
    picked by a mask) write exactly what the unrecorded ones write, on GC rows of many vectors
    and a tail, across task boundaries, with syncs (k = 2)."""
    runs = []
    for telemetry in (False, True):
        gen = torch.Generator().manual_seed(3)
        params = [
            torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in LONG_ROW_SHAPES
        ]
        opt = cls(params, lr=1e-2, k=2, alpha=alpha, fused=True, telemetry=telemetry)
        for _ in range(5):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen, dtype=dtype)
            opt.step()
        runs.append(params)
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


def resume(case, params, saved, start, steps, **path):
    """A new optimizer on ``path`` loads ``saved`` and takes ``trajectory``'s steps from
    ``start`` (the gradients drawn as ``trajectory`` draws them)."""
    groups = [{"params": params[:4]}, {"params": params[4:], **case.second}]
    resumed = case.ours(groups, **path)
    resumed.load_state_dict(saved)
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        for i, p in enumerate(params):
            p.grad = None if i == 3 else torch.randn(p.shape, generator=gen)
        if step >= start:
            resumed.step()
    return resumed


def test_state_dict_moves_between_paths():
    """A checkpoint from the fused path resumes on the reference path and vice versa."""
    case = case_named("ranger-lars-capped-k4")  # resumes mid-cycle
    full = trajectory(case, torch.float32, steps=10, foreach=False)
    for first, then in (
        (dict(fused=True), dict(foreach=False)),
        (dict(foreach=True), dict(fused=True)),
    ):
        params, opt = trajectory(case, torch.float32, steps=5, **first)
        saved = copy.deepcopy(opt.state_dict())
        resumed = resume(case, params, saved, start=5, steps=10, **then)
        assert_same(params, resumed, *full, rtol=1e-6)


def test_grad_untouched_and_no_temporaries():
    params = make_params(torch.float32)
    for p in params:
        p.grad = torch.randn(p.shape)
    grads = [p.grad.clone() for p in params]
    opt = rangerlab.Ranger(params, fused=True)
    opt.step()
    assert all(torch.equal(p.grad, g) for p, g in zip(params, grads, strict=True))
    # One step allocates no model-sized buffer (the reference path copies every gradient).
    assert bench.step_allocation(opt) < 4096
    assert bench.step_allocation(rangerlab.Ranger(params, foreach=True)) > 4 * sum(
        p.numel() for p in params
    )


@pytest.mark.parametrize("path", [dict(fused=True), dict(foreach=True)], ids=["fused", "foreach"])
def test_amp_skipped_step_changes_nothing(path):
    params = make_params(torch.float32)
    opt = rangerlab.Ranger(params, k=1, **path)
    # GradScaler hands grad_scale and found_inf to step() instead of unscaling itself.
    assert opt._step_supports_amp_scaling
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    scaler.scale(torch.ones(()))  # what scaling a loss does: creates the scale
    before = [p.detach().clone() for p in params]
    for p in params:
        p.grad = torch.full(p.shape, float("inf"))
    scaler.step(opt)
    scaler.update()
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True))
    assert not opt.state and opt.param_groups[0].get("lookahead_step", 0) == 0


@pytest.mark.parametrize("path", [dict(fused=True), dict(foreach=True)], ids=["fused", "foreach"])
def test_amp_scaled_step_equals_unscaled(path):
    """The gradients GradScaler hands over scaled are divided by its scale inside the step."""
    case = case_named("ranger-lars-capped-k4")  # the trust ratio sees unscaled gradients
    plain = trajectory(case, torch.float32, steps=3, **path)
    params = make_params(torch.float32)
    opt = case.ours([{"params": params[:4]}, {"params": params[4:], **case.second}], **path)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        scaler.scale(torch.ones(()))
        for i, p in enumerate(params):
            p.grad = None if i == 3 else torch.randn(p.shape, generator=gen) * scaler.get_scale()
        scaler.step(opt)
        scaler.update()
    assert_same(params, opt, *plain, rtol=1e-6)


def test_path_selection():
    params = make_params(torch.float32)
    ranger = rangerlab.Ranger(params)
    group = ranger.param_groups[0]
    kernel = fused.select(group, ranger.chain_for(group), params)
    assert kernel is not None and kernel.radam and kernel.centralize and kernel.lookahead
    # An explicit foreach asks for the reference path, as torch's fused=None does.
    assert fused.select({**group, "foreach": True}, ranger.chain_for(group), params) is None
    assert fused.select({**group, "fused": False}, ranger.chain_for(group), params) is None
    lars = rangerlab.LARS(params, lr=0.1)
    kernel = fused.kernel_for(lars.chain_for(lars.param_groups[0]))
    assert kernel.family == "sgd" and kernel.trust and kernel.momentum
    lamb = [scale_by_adam(), scale_by_trust_ratio()]
    assert fused.kernel_for(lamb).trust and not fused.kernel_for(lamb).radam


def test_fused_true_errors():
    params = make_params(torch.float32)
    with pytest.raises(ValueError, match="no fused kernel"):
        rangerlab.Chain(params, [lookahead(), centralize()], fused=True)
    # Without fused=True the same chain just takes the reference path.
    rangerlab.Chain(params, [lookahead(), centralize()]).step()
    odd = torch.nn.Parameter(torch.randn(4, 6).t())
    odd.grad = torch.randn(6, 4)
    with pytest.raises(ValueError, match="non-contiguous"):
        rangerlab.Adam([odd], fused=True).step()
    rangerlab.Adam([odd]).step()  # fused=None: the reference path


def test_unknown_setting_refuses_the_kernel():
    """A link that declares a setting the kernels do not read takes the reference path."""

    class Amsgrad(scale_by_adam().__class__):
        hyperparams = {"betas": (0.9, 0.999), "eps": 1e-8}

    extra = scale_by_adam()
    extra.hyperparams = {**extra.hyperparams, "amsgrad": False}
    assert fused.kernel_for([scale_by_adam()]) is not None
    assert fused.kernel_for([extra]) is None
    assert fused.kernel_for([Amsgrad()]) is None  # a subclass may change the maths
    with pytest.raises(ValueError, match="no fused kernel"):
        rangerlab.Chain(make_params(torch.float32), [extra], fused=True)


def test_scalar_owners_take_numbers_and_tensors():
    """The per-step rules give the same values for Python steps and for a tensor of steps."""
    from rangerlab.transforms.adam import adam_scalars
    from rangerlab.transforms.radam import radam_scalars

    steps = torch.arange(1, 12, dtype=torch.float64)
    for owner in (adam_scalars, radam_scalars):
        a, d, adaptive = owner(steps, 0.9, 0.999)
        for i, t in enumerate(range(1, 12)):
            a_t, d_t, on = owner(t, 0.9, 0.999)
            assert float(a[i]) == pytest.approx(a_t, rel=1e-12)
            assert float(d if isinstance(d, float) else d[i]) == pytest.approx(d_t, rel=1e-12)
            assert bool(adaptive if isinstance(adaptive, bool) else adaptive[i]) == on
    # RAdam turns adaptive at step 6 with beta2 = 0.999 (rho_t > 5), as torch does.
    assert radam_scalars(steps, 0.9, 0.999)[2].tolist() == [False] * 5 + [True] * 6


def test_bench_runs_and_reports(monkeypatch):
    assert sum(torch.Size(s).numel() for s in bench.resnet18_shapes()) == 11_689_512
    monkeypatch.setitem(bench.PARAM_SETS, "tiny", [(8, 4), (3,)])
    lines = []
    rows = bench.run(["tiny"], reps=1, with_peers=False, print_fn=lines.append)
    assert [r["name"] for r in rows] == [c.name for c in bench.ours()]
    assert all(r["seconds"] > 0 and r["ratio"] > 0 for r in rows)
    ranger = next(r for r in rows if r["name"] == "rangerlab.Ranger")
    assert ranger["state_bytes"] == 12  # exp_avg, exp_avg_sq, slow_param in float32
    assert any("rangerlab.RAdam" in line and "<= 1.80" in line for line in lines)


def test_cuda_bench_sets_and_refusal(capsys):
    from rangerlab import bench_cuda

    sizes = {k: sum(torch.Size(s).numel() for s in v) for k, v in bench_cuda.SETS.items()}
    assert sizes == {"resnet18": 11_689_512, "gpt2-small": 124_439_808, "2000x4096": 8_192_000}
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            bench.main(["--device", "cuda"])
        assert "CUDA is not available" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--sets", "gpt2-small"])  # a GPU-only set


@pytest.mark.parametrize("case", [c for c in CASES if not c.kwargs.get("weight_decay")], ids=str)
def test_a_weight_of_inf_steps_as_on_the_reference_path(case):
    """Weight decay that is off adds no term at all (as in torch and the reference path), so an
    inf weight leaves its moments finite instead of 0 * inf turning them into NaN, and the other
    elements step as usual. (With decay on, the fused kernels still add the unused kind, coupled
    or decoupled, as a 0 factor: there an inf weight still gives NaN moments.)"""
    runs = []
    for path in ("fused", "foreach"):
        params = make_params(torch.float32)
        for p in params:
            if p.numel() > 1:
                p.data.view(-1)[1] = math.inf
        opt = case.ours(params, **PATHS[path])
        gen = torch.Generator().manual_seed(1)
        for _ in range(3):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
        runs.append((params, opt))
    (fast, fast_opt), (ref, ref_opt) = runs
    for pf, pr in zip(fast, ref, strict=True):
        pairs = [(pf, pr)] + [(fast_opt.state[pf][k], v) for k, v in ref_opt.state[pr].items()]
        for a, b in pairs:
            if torch.is_tensor(b) and b.dim() > 0:
                assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a.isinf(), b.isinf())
                finite = b.isfinite()
                torch.testing.assert_close(a[finite], b[finite], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_advance_steps_adds_one_in_place_and_returns_the_counts(dtype):
    fused.available()  # loaded: the one-call path
    counters = [torch.tensor(float(k), dtype=dtype) for k in (0, 1, 6, 41)]
    again = [c.clone() for c in counters]
    assert fused.advance_steps(counters) == [1, 2, 7, 42]
    torch._foreach_add_(again, 1.0)  # torch's way, tensor by tensor
    assert all(c.dtype == dtype and torch.equal(c, a) for c, a in zip(counters, again))
    assert fused.advance_steps(counters) == [2, 3, 8, 43]


def test_advance_steps_leaves_other_kinds_of_counter_to_torch():
    fused.available()
    # a one-element 1-D counter is torch.optim's kind too; float16 is not, and takes torch's path
    counters = [torch.tensor([2.0]), torch.tensor(2.0, dtype=torch.float16)]
    assert fused.advance_steps(counters) == [3, 3]
    assert counters[1].dtype == torch.float16 and float(counters[1]) == 3.0
    # an integer counter: torch's in-place add of 1.0 refuses it, so the step does too
    with pytest.raises(RuntimeError, match="can't be cast"):
        fused.advance_steps([torch.tensor(2)])
    with pytest.raises(RuntimeError, match="step counter is not a finite count"):
        fused.advance_steps([torch.tensor(float("inf"))])


def test_a_checkpoint_with_float64_step_counters_steps_as_the_reference_path():
    gen = torch.Generator().manual_seed(3)
    paths = {}
    for fused_ in (None, False):
        p = torch.nn.Parameter(torch.randn(4, 5, generator=torch.Generator().manual_seed(0)))
        opt = rangerlab.RAdam([p], lr=1e-2, fused=fused_)
        p.grad = torch.randn(4, 5, generator=gen)
        opt.step()
        opt.state[p]["step"] = opt.state[p]["step"].double()  # as a torch checkpoint may hold
        p.grad = torch.randn(4, 5, generator=gen)
        opt.step()
        paths[fused_] = (p.detach().clone(), opt.state[p]["step"])
        gen = torch.Generator().manual_seed(3)
    assert paths[None][1].dtype == torch.float64 and float(paths[None][1]) == 2.0
    assert torch.allclose(paths[None][0], paths[False][0], rtol=1e-6, atol=0)
