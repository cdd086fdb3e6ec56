"""The telemetry stats that the Triton step computes within its own passes (issue 13).

Each step of a small trajectory runs through a wrapper around the bucket's ``TritonStep`` that
passes a ``stats`` tensor (`rangerlab.fused.stats.new_stats`) and keeps the weights, gradients and
state from before and after the step. Every column is then recomputed in float64 from those
tensors (the update direction from the new moments or momentum buffer, the trust ratio from the
rules in ``transforms/trust_ratio.py``) and compared; a second run without stats must leave
bit-identical weights and state at every step.

Without a GPU the kernels run under triton's interpreter on CPU tensors (as in
``test_triton.py``, with ``RANGERLAB_TRITON_ON_CPU=1`` and a small chunk so that a tensor spans
several programs); on a GPU machine the same tests run the compiled kernels on CUDA tensors.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
triton = pytest.importorskip("triton")

import rangerlab  # noqa: E402
from rangerlab import fused  # noqa: E402
from rangerlab.fused import triton_plan  # noqa: E402
from rangerlab.fused.stats import STATS_COLUMNS, new_stats  # noqa: E402
from rangerlab.transforms.trust_ratio import lamb_ratio, lars_ratio  # noqa: E402

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRETED else "cuda"

pytestmark = pytest.mark.skipif(
    not INTERPRETED and not torch.cuda.is_available(),
    reason="neither triton's interpreter nor a GPU",
)

# A 0-d scalar, an empty tensor, a bias, a 4-D conv weight (GC rows of 18), a matrix that spans
# three programs of `CHUNK` elements (GC rows of 70: two column tiles each), and one whose 40 GC
# rows of 3 fill three row tiles of one program. A program's partial sums and q moments are then
# combined over tiles, over row lanes and over programs.
SHAPES = [(), (0,), (7,), (4, 2, 3, 3), (20, 70), (40, 3)]
CHUNK = 512
STEPS = 2  # a momentum buffer's first step and a later one
RADAM_STEPS = 6  # RAdam's first adaptive step is the 6th (Ranger's Lookahead syncs on the way)
RTOL = 1e-5


def _case(name, cls, second=None, **kwargs):
    """``second``: the settings of a second param group, which holds the last two shapes."""
    return pytest.param(cls, kwargs, second or {}, id=name)


# Every chain kind with a Triton kernel; lr large enough that a Lookahead distance stands well
# above float32's rounding of the weights.
CASES = [
    _case("adam", rangerlab.Adam, lr=0.05),
    _case("adam-l2-gc", rangerlab.Adam, lr=0.05, weight_decay=0.1, gc=True),
    _case("adamw", rangerlab.Adam, lr=0.05, weight_decay=0.1, decoupled_weight_decay=True),
    _case(
        "radam-decoupled-gc",
        rangerlab.RAdam,
        lr=0.05,
        weight_decay=0.1,
        gc=True,
        decoupled_weight_decay=True,
        second=dict(gc=False),
    ),
    _case(
        "ranger-k2",
        rangerlab.Ranger,
        lr=0.1,
        weight_decay=0.1,
        k=2,
        alpha=0.6,
        second=dict(gc=False, alpha=0.3),
    ),
    _case("lamb-gc", rangerlab.LAMB, lr=0.05, weight_decay=0.1, gc=True, second=dict(gc=False)),
    _case(
        "ranger-lars-k3",
        rangerlab.RangerLARS,
        lr=0.1,
        k=3,
        max_weight_norm=2.0,
        second=dict(trust_ratio=False, alpha=0.3),
    ),
    _case("sgd", rangerlab.SGD, lr=0.1),
    _case("sgd-momentum-gc", rangerlab.SGD, lr=0.1, momentum=0.9, dampening=0.3, gc=True),
    _case("sgd-nesterov-wd", rangerlab.SGD, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    _case(
        "lars-momentum-gc",
        rangerlab.LARS,
        lr=0.5,
        momentum=0.9,
        trust_coefficient=0.02,
        gc=True,
        weight_decay=1e-3,
        second=dict(trust_ratio=False),
    ),
    _case("larc-clip", rangerlab.LARS, lr=0.5, clip=True, trust_coefficient=0.5, weight_decay=1e-2),
]


@pytest.fixture(autouse=True)
def triton_path(monkeypatch):
    """CPU buckets take the Triton path (there is no other on a GPU); small programs."""
    monkeypatch.setenv("RANGERLAB_TRITON_ON_CPU", "1")
    monkeypatch.setattr(triton_plan, "CHUNK", CHUNK)


def _copy(value):
    return value.detach().clone() if isinstance(value, torch.Tensor) else value


class Recorder:
    """Wraps the bucket's step: passes ``stats`` (or not) and keeps what each call saw."""

    def __init__(self, step, log, with_stats):
        assert isinstance(step, triton_plan.TritonStep) and step.records
        self.step, self.log, self.with_stats = step, log, with_stats

    def __getattr__(self, name):
        return getattr(self.step, name)

    def __call__(self, group, weights, grads, states, control, reduce_norms=None):
        before = [[_copy(w) for w in weights], [_copy(g) for g in grads],
                  [{k: _copy(v) for k, v in s.items()} for s in states]]  # fmt: skip
        stats = new_stats(len(weights), weights[0].device) if self.with_stats else None
        self.step(group, weights, grads, states, control, stats=stats)
        after = [[_copy(w) for w in weights], [{k: _copy(v) for k, v in s.items()} for s in states]]
        scale = control.grad_scale
        self.log.append(
            dict(group=group, kernel=self.step.kernel, before=before, after=after, stats=stats,
                 scale=1.0 if scale is None else float(scale),
                 skipped=control.found_inf is not None and bool(control.found_inf.item()))
        )  # fmt: skip


_SELECT = fused.select  # the real one (each run replaces it by its recording wrapper)


def _record(monkeypatch, with_stats):
    log = []
    select = _SELECT

    def recording_select(group, transforms, weights):
        step = select(group, transforms, weights)
        return None if step is None else Recorder(step, log, with_stats)

    monkeypatch.setattr(fused, "select", recording_select)
    return log


def _run(cls, kwargs, monkeypatch, with_stats, dtype=torch.float32, steps=STEPS, scales=None,
         second=None):  # fmt: skip
    """A trajectory on the fixed shapes, seeds fixed; ``scales[t]`` runs step t as GradScaler
    does (``(scale, found_inf)``); ``second``: a second param group's settings."""
    log = _record(monkeypatch, with_stats)
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen).to(DEVICE, dtype)) for s in SHAPES]
    groups = [{"params": params}]
    if second is not None:
        groups = [{"params": params[:-2]}, {"params": params[-2:], **second}]
    opt = cls(groups, fused=True, **kwargs)
    for t in range(steps):
        scale, found_inf = (1.0, None) if scales is None else scales[t]
        for p in params:
            g = torch.randn(p.shape, generator=gen).to(DEVICE, dtype)
            p.grad = g * scale if found_inf is None or not found_inf else g * float("inf")
        if scales is None:
            opt.step()
        else:
            opt.grad_scale = torch.full((), scale, device=DEVICE)
            opt.found_inf = torch.full((1,), float(bool(found_inf)), device=DEVICE)
            try:
                opt.step()
            finally:
                del opt.grad_scale, opt.found_inf
    return params, opt, log


def _f64(t):
    return t.detach().to("cpu", torch.float64)


def expected_row(kernel, group, w0, g, s0, s1, scale):
    """The stats row of one tensor, in float64, from before (``w0``, ``g``, ``s0``) and after
    (``s1``) the step: the definitions of `rangerlab.fused.stats`, computed directly."""
    w0, g = _f64(w0).reshape(-1 if w0.dim() == 0 else w0.shape), _f64(g) / scale
    row = dict.fromkeys(STATS_COLUMNS, 0.0)
    row["ratio"] = 1.0
    row["w_sq"], row["g_sq"] = (w0 * w0).sum(), (g * g).sum()
    gc = g
    if kernel.gc(group) and g.dim() > 1:
        rows = g.reshape(g.shape[0], -1)
        mean = rows.mean(dim=1)
        row["gc_sq"] = (rows.shape[1] * mean * mean).sum()
        gc = (rows - mean[:, None]).reshape(g.shape)
    decay = kernel.weight_decay(group)
    lr = group["lr"]
    step = int(s1["step"])
    if kernel.family == "adam":
        beta1, beta2 = group["betas"]
        a, d, adaptive = kernel.scalars(step, beta1, beta2)
        m, v = _f64(s1["exp_avg"]), _f64(s1["exp_avg_sq"])
        m, v = m.reshape(w0.shape), v.reshape(w0.shape)
        if adaptive:
            q = 1.0 / (v.sqrt() / d + group["eps"])
            u = a * m * q
            row["q_n"], row["q_mean"] = q.numel(), q.mean() if q.numel() else 0.0
            row["q_m2"] = ((q - q.mean()) ** 2).sum() if q.numel() else 0.0
        else:
            u = a * m
        if kernel.decay == "decoupled":
            u = u + decay * w0
        if kernel.uses_trust(group):
            row["ratio"] = float(lamb_ratio(float(w0.norm()), float(u.norm()), group))
            u = u * row["ratio"]
        if kernel.lookahead:
            slow0, slow1 = _f64(s0["slow_param"]), _f64(s1["slow_param"])
            if not torch.equal(slow0, slow1):  # a sync step
                fast = w0 - lr * u
                row["dist_sq"] = ((fast - slow0.reshape(w0.shape)) ** 2).sum()
    else:
        if kernel.uses_trust(group):
            row["ratio"] = float(lars_ratio(float(w0.norm()), float(gc.norm()), group))
        u = (gc + decay * w0) * row["ratio"]
        momentum = group["momentum"] if kernel.momentum else 0.0
        if momentum:
            buf = _f64(s1["momentum_buffer"]).reshape(w0.shape)
            u = u + momentum * buf if group["nesterov"] else buf
    row["u_sq"] = (u * u).sum()
    return torch.tensor([float(row[c]) for c in STATS_COLUMNS], dtype=torch.float64)


def check_stats(log, rtol=RTOL):
    """Every logged step's stats against `expected_row`; returns the checked rows with their
    calls."""
    rows = []
    for call in log:
        if call["skipped"]:
            continue
        stats = call["stats"]
        assert stats.dtype == torch.float64 and stats.shape == (len(call["after"][0]), 9)
        (w0, g, s0), (_, s1) = call["before"], call["after"]
        for i in range(len(w0)):
            want = expected_row(call["kernel"], call["group"], w0[i], g[i], s0[i], s1[i],
                                call["scale"])  # fmt: skip
            got = stats[i].cpu()
            for c, name in enumerate(STATS_COLUMNS):
                assert got[c].item() == pytest.approx(want[c].item(), rel=rtol, abs=1e-30), (
                    f"step {int(s1[i]['step'])}, tensor {tuple(w0[i].shape)}, {name}: "
                    f"{got.tolist()} vs {want.tolist()}"
                )
            rows.append((call, w0[i], want))
    return rows


def assert_bit_identical(log_a, log_b):
    """The weights and state after every step are the same bits with and without stats."""
    assert len(log_a) == len(log_b)
    for a, b in zip(log_a, log_b, strict=True):
        for wa, wb in zip(a["after"][0], b["after"][0], strict=True):
            assert torch.equal(wa, wb)
        for sa, sb in zip(a["after"][1], b["after"][1], strict=True):
            assert sorted(sa) == sorted(sb)
            for key in sa:
                assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("cls, kwargs, second", CASES)
def test_stats_equal_float64_and_updates_unchanged(cls, kwargs, second, monkeypatch):
    probe = cls([torch.zeros(1)], **kwargs)
    kernel = fused.kernel_for(probe.chain_for(probe.param_groups[0]))
    steps = RADAM_STEPS if kernel.radam else STEPS
    args = dict(steps=steps, second=second)
    _, _, with_stats = _run(cls, kwargs, monkeypatch, True, **args)
    _, _, without = _run(cls, kwargs, monkeypatch, False, **args)
    assert_bit_identical(with_stats, without)
    assert all(call["stats"] is None for call in without)
    rows = check_stats(with_stats)
    # The trajectories reach what each column is about (the comparisons are not vacuous).
    col = {name: i for i, name in enumerate(STATS_COLUMNS)}

    def where(name, keep=lambda call, w: True):
        return torch.tensor([float(want[col[name]]) for call, w, want in rows if keep(call, w)])

    assert (where("u_sq", lambda call, w: w.numel() > 0) > 0).all()
    step_is = lambda t: lambda call, w: int(call["after"][1][0]["step"]) == t  # noqa: E731
    if kernel.family == "adam":
        assert (where("q_n", step_is(steps)) > 0).any()  # the last step is adaptive
        if kernel.radam:
            assert (where("q_n", step_is(1)) == 0).all()  # the first one is not
    else:
        assert (where("q_n") == 0).all()
    centralized = lambda call, w: call["kernel"].gc(call["group"]) and w.dim() > 1  # noqa: E731
    assert (where("gc_sq", centralized) > 0).all()
    assert (where("gc_sq", lambda call, w: not centralized(call, w)) == 0).all()
    if kernel.lookahead:
        assert (where("dist_sq") > 0).any() and (where("dist_sq") == 0).any()
    else:
        assert (where("dist_sq") == 0).all()
    trusted = lambda call, w: call["kernel"].uses_trust(call["group"])  # noqa: E731
    assert (where("ratio", lambda call, w: not trusted(call, w)) == 1).all()
    if kernel.trust:
        assert (where("ratio", trusted) != 1).any()


def test_low_precision_weights(monkeypatch):
    """bf16 weights read and written directly: stats in float32 math from the bf16 values."""
    cls, kwargs = rangerlab.RangerLARS, dict(lr=0.1, k=2, weight_decay=0.1)
    args = dict(dtype=torch.bfloat16, steps=3)  # a Lookahead sync at step 2
    params, _, with_stats = _run(cls, kwargs, monkeypatch, True, **args)
    assert params[2].dtype == torch.bfloat16
    _, _, without = _run(cls, kwargs, monkeypatch, False, **args)
    assert_bit_identical(with_stats, without)
    check_stats(with_stats)


def test_grad_scaler_unscaled_and_skipped_steps(monkeypatch):
    """g_sq is of the unscaled gradient; a step with found_inf runs with stats without harm
    (and changes nothing), including a skipped first step of momentum buffers."""
    scales = [(8.0, True), (8.0, False), (2.0, True), (2.0, False)]
    for cls, kwargs in ((rangerlab.LARS, dict(lr=0.5, momentum=0.9, trust_coefficient=0.02)),
                        (rangerlab.Ranger, dict(lr=0.1, k=2))):  # fmt: skip
        _, _, with_stats = _run(cls, kwargs, monkeypatch, True, steps=4, scales=scales)
        _, _, without = _run(cls, kwargs, monkeypatch, False, steps=4, scales=scales)
        assert_bit_identical(with_stats, without)
        for call in with_stats:
            if call["skipped"]:
                (w0, _, _), (w1, _) = call["before"], call["after"]
                assert all(torch.equal(a, b) for a, b in zip(w0, w1, strict=True))
                assert call["stats"].isfinite().all()
        assert len(check_stats(with_stats)) == 2 * len(SHAPES)


def test_stats_argument_is_checked():
    params = [torch.nn.Parameter(torch.randn(3, device=DEVICE))]
    opt = rangerlab.Adam(params, fused=True)
    group = opt.param_groups[0]
    step = fused.select(group, opt.chain_for(group), params)
    with pytest.raises(ValueError, match="stats must be float64"):
        step(group, params, [torch.ones_like(params[0])], [{}], fused.NO_CONTROL,
             stats=new_stats(2, DEVICE))  # fmt: skip


# The stats kernels compile for sm_80 and sm_90 in test_triton_compile.py, with the others.


@pytest.mark.parametrize("name", ["ranger", "ranger_lars", "lars", "adamw", "sgd"])
def test_chain_records_from_the_triton_stats_as_from_the_cpu_kernels(name, monkeypatch):
    """End to end through ``opt.telemetry()``: the Triton path (its device step counters,
    device-side RAdam and sync masks) reports what the C++ kernels report, step by step."""
    pytest.importorskip("rangerlab.fused.triton_plan")
    import rangerlab
    from rangerlab import fused

    if not fused.available():
        pytest.skip("no C++ compiler: the CPU kernels cannot be built here")
    shapes = {"conv.weight": (6, 3, 3, 3), "fc.weight": (5, 54), "fc.bias": (5,)}
    reads = {}
    for triton in (True, False):
        monkeypatch.setenv("RANGERLAB_TRITON_ON_CPU", "1" if triton else "0")
        gen = torch.Generator().manual_seed(0)
        device = DEVICE if triton else "cpu"  # on a GPU machine: CUDA against the C++ kernels
        named = [
            (n, torch.nn.Parameter(torch.randn(s, generator=gen).to(device)))
            for n, s in shapes.items()
        ]
        kwargs = {"k": 3} if name.startswith("ranger") else {}
        opt = rangerlab.create_optimizer(named, name, telemetry=True, **kwargs)
        group = opt.param_groups[0]
        picked = fused.select(group, opt.chain_for(group), group["params"])
        assert isinstance(picked, triton_plan.TritonStep) == triton, picked
        reads[triton] = []
        for step in range(7):  # past RAdam's threshold, through two Lookahead syncs
            gen_g = torch.Generator().manual_seed(100 + step)
            for _, p in named:
                p.grad = torch.randn(p.shape, generator=gen_g).to(device)
            opt.step()
            reads[triton].append(opt.telemetry())
    for step, (got, want) in enumerate(zip(reads[True], reads[False]), start=1):
        assert set(got) == set(want), (step, sorted(set(got) ^ set(want)))
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=2e-5, abs=1e-9), (step, key)
    seen = {key.split("/")[0] for read in reads[True] for key in read}
    if name.startswith("ranger"):
        assert {"lookahead_distance", "rectifier", "adaptive_lr_cv"} <= seen
