"""Telemetry: every recorded value against a direct float64 computation from the weights, the
gradients and the optimizer state, for every preset; off costs nothing; names; intervals."""

from __future__ import annotations

import math

import pytest
import torch

import rangerlab
from rangerlab import telemetry

SHAPES = [(4, 3), (3,), (2, 3, 2, 2)]
NAMES = ["fc.weight", "fc.bias", "conv.weight"]
STEPS = 8  # past RAdam's threshold (rho_t > 5 from step 6 with beta2 = 0.999)

# name: (constructor, kwargs, what the algorithm is)
PRESETS = {
    "sgd": (rangerlab.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01, gc=True), {}),
    "adam": (rangerlab.Adam, dict(lr=0.01, weight_decay=0.01), {"adam": "adam"}),
    "adamw": (
        rangerlab.Adam,
        dict(lr=0.01, weight_decay=0.01, decoupled_weight_decay=True, gc=True),
        {"adam": "adam"},
    ),
    "radam": (rangerlab.RAdam, dict(lr=0.01), {"adam": "radam"}),
    "lars": (
        rangerlab.LARS,
        dict(lr=0.5, weight_decay=1e-3, trust_coefficient=0.02),
        {"trust": "lars"},
    ),
    "larc": (
        rangerlab.LARS,
        dict(lr=0.5, weight_decay=1e-3, trust_coefficient=0.02, clip=True, gc=True),
        {"trust": "lars"},
    ),
    "lamb": (
        rangerlab.LAMB,
        dict(lr=0.01, weight_decay=0.01, max_weight_norm=1.5),
        {"adam": "adam", "trust": "lamb"},
    ),
    "ranger": (rangerlab.Ranger, dict(lr=0.01, k=3, alpha=0.6), {"adam": "radam", "lookahead": 1}),
    # alpha < 0.5: the sync's other formula (torch's lerp picks by the weight's size)
    "ranger_alpha0.3": (
        rangerlab.Ranger,
        dict(lr=0.01, k=2, alpha=0.3),
        {"adam": "radam", "lookahead": 1},
    ),
    "ranger_lars_alpha0.3": (
        rangerlab.RangerLARS,
        dict(lr=0.01, k=2, alpha=0.3, weight_decay=0.01),
        {"adam": "radam", "trust": "lamb", "lookahead": 1},
    ),
    "ranger_lars": (
        rangerlab.RangerLARS,
        dict(lr=0.01, k=3, alpha=0.6, weight_decay=0.01),
        {"adam": "radam", "trust": "lamb", "lookahead": 1},
    ),
}


def make_params(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [
        (n, torch.nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float64)))
        for n, s in zip(NAMES, SHAPES)
    ]


def grads(step, params):
    gen = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params]


def norm(x):
    return torch.linalg.vector_norm(x).item()


def removed_mean(g):
    return g.mean(dim=tuple(range(1, g.dim())), keepdim=True).expand_as(g)


def rho(t, beta2):
    rho_inf = 2 / (1 - beta2) - 1
    return rho_inf, rho_inf - 2 * t * beta2**t / (1 - beta2**t)


def expected(kind, group, w0, g, state, slow0, t):
    """Every quantity of one step, computed from the formulas of the papers."""
    lr, out = group["lr"], {}
    beta1, beta2 = group.get("betas", (0.9, 0.999))
    eps, wd = group.get("eps", 0.0), group.get("weight_decay", 0.0)
    gc = group.get("gc", False)
    for name, w, grad, s, slow, p_after in zip(NAMES, w0, g, state, slow0, group["params"]):
        g_c = grad - removed_mean(grad) if gc and grad.dim() > 1 else grad
        out[f"weight_norm/{name}"] = norm(w)
        out[f"grad_norm/{name}"] = norm(grad)
        if gc and grad.dim() > 1:
            out[f"gc_removed_norm/{name}"] = norm(removed_mean(grad))
        fast = p_after.detach()
        if kind.get("lookahead"):
            if t % group["k"] == 0:  # a sync: recover the fast weights from the slow move
                fast = slow + (s["slow_param"] - slow) / group["alpha"]
                out[f"lookahead_distance/{name}"] = norm(fast - slow)
        out[f"update_norm/{name}"] = norm(fast - w)
        out[f"update_ratio/{name}"] = norm(fast - w) / norm(w)
        direction = None
        if kind.get("adam"):
            m, v = s["exp_avg"], s["exp_avg_sq"]
            m_hat, bc2 = m / (1 - beta1**t), 1 - beta2**t
            if kind["adam"] == "adam":
                step = 1 / ((v / bc2).sqrt() + eps)
                direction = m_hat * step
            else:
                rho_inf, rho_t = rho(t, beta2)
                out[f"adaptive/{name}"] = float(rho_t > 5)
                step, direction = None, m_hat
                if rho_t > 5:
                    r = math.sqrt(
                        (rho_t - 4)
                        * (rho_t - 2)
                        * rho_inf
                        / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
                    )
                    out[f"rectifier/{name}"] = r
                    step = math.sqrt(bc2) / (v.sqrt() + eps)
                    direction = r * m_hat * step
            if step is not None:
                mean = step.mean().item()
                out[f"adaptive_lr_mean/{name}"] = mean
                out[f"adaptive_lr_cv/{name}"] = step.std(correction=0).item() / mean
        if kind.get("trust") == "lars":
            wn, gn = norm(w), norm(g_c)
            trust = group["trust_coefficient"] * wn / (gn + wd * wn + eps)
            out[f"trust_ratio/{name}"] = min(trust / lr, 1.0) if group["clip"] else trust
        if kind.get("trust") == "lamb":
            u = direction + wd * w
            out[f"trust_ratio/{name}"] = min(norm(w), group["max_weight_norm"]) / norm(u)
    out.update({"lr/group0": lr, "skipped": 0.0, "steps": 1.0, "recorded_steps": 1.0})
    return out


def assert_matches(got, want):
    assert set(got) == set(want), sorted(set(got) ^ set(want))
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def step_and_read(opt, params, t):
    """One step with step ``t``'s gradients; returns the telemetry and what it is checked with."""
    w0 = [p.detach().clone() for p in params]
    slow0 = [opt.state[p].get("slow_param", w).clone() for p, w in zip(params, w0)]
    g = grads(t, params)
    for p, grad in zip(params, g):
        p.grad = grad.clone()
    opt.step()
    return opt.telemetry(), (w0, g, [opt.state[p] for p in params], slow0, t)


#: The fused C++ kernels (the default) fill the values in their own passes; the reference path
#: records them with probes and the transforms.
PATHS = {"fused": {"fused": True}, "foreach": {"foreach": True}, "loop": {"foreach": False}}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("name", list(PRESETS))
def test_every_value_matches_a_direct_computation(name, path):
    cls, kwargs, kind = PRESETS[name]
    named = make_params()
    params = [p for _, p in named]
    opt = cls(named, telemetry=True, **PATHS[path], **kwargs)
    group = opt.param_groups[0]
    seen = set()
    for t in range(1, STEPS + 1):
        got, checked = step_and_read(opt, params, t)
        assert_matches(got, expected(kind, group, *checked))
        seen |= {key.split("/")[0] for key in got}
        for p, grad in zip(params, checked[1]):
            assert torch.equal(p.grad, grad)  # the user's gradients are left alone
    if kind.get("adam") == "radam":
        assert "rectifier" in seen  # both phases of RAdam were checked
    if kind.get("lookahead"):
        assert "lookahead_distance" in seen


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("name", list(PRESETS))
def test_the_trajectory_is_the_one_without_telemetry(name, path):
    """Bit for bit: recording reads the step, it never changes it (the fused kernels' variant
    with the sums writes exactly what the variant without them writes)."""
    cls, kwargs, _ = PRESETS[name]
    runs = []
    for on in (False, True):
        params = [p for _, p in make_params()]
        opt = cls(params, telemetry=on, **PATHS[path], **kwargs)
        for t in range(1, STEPS + 1):
            for p, grad in zip(params, grads(t, params)):
                p.grad = grad
            opt.step()
        runs.append(params)
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _refuse(*args, **kwargs):
    raise AssertionError("telemetry code ran with telemetry off")


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("path", [{}, {"foreach": True}, {"foreach": False}])
def test_off_does_no_extra_work(name, path, monkeypatch):
    """Off, no recording code runs (so the step does no extra work): every entry point raises."""
    for target in ("probed", "record_step", "norms", "recorder"):
        monkeypatch.setattr(telemetry, target, _refuse)
    monkeypatch.setattr(telemetry.BucketProbe, "add", _refuse)
    cls, kwargs, _ = PRESETS[name]
    params = [p for _, p in make_params()]
    opt = cls(params, **path, **kwargs)
    for t in range(1, 4):
        for p, grad in zip(params, grads(t, params)):
            p.grad = grad
        opt.step()
    assert all(g["telemetry"] is False for g in opt.param_groups)
    assert not any(isinstance(t, telemetry._Probe) for t in opt.chain_for(opt.param_groups[0]))


def test_a_recorded_step_takes_the_fused_path(monkeypatch):
    """The default path records from the kernels' own sums: no probes, no reference step."""
    from rangerlab import fused
    from rangerlab.fused import plans

    real, picked, stats_seen = fused.select, [], []
    monkeypatch.setattr(fused, "select", lambda *a: picked.append(real(*a)) or picked[-1])
    call = plans.FusedKernel.__call__

    def spy(self, *args, stats=None, **kwargs):
        stats_seen.append(stats)
        return call(self, *args, stats=stats, **kwargs)

    monkeypatch.setattr(plans.FusedKernel, "__call__", spy)
    monkeypatch.setattr(telemetry, "probed", _refuse)
    named = make_params()
    params = [p for _, p in named]
    opt = rangerlab.Ranger(named, telemetry=True)
    for p, grad in zip(params, grads(1, params)):
        p.grad = grad
    opt.step()
    if not fused.available():
        pytest.skip("no C++ compiler: the fused kernels cannot be built here")
    assert picked and all(k is not None for k in picked)
    assert [tuple(s.shape) for s in stats_seen] == [(3, len(fused.STATS_COLUMNS))]
    assert "grad_norm/fc.weight" in opt.telemetry()
    # fused=True and telemetry go together now; bad values are still refused
    rangerlab.Ranger(params, fused=True, telemetry=True)
    with pytest.raises(ValueError, match="Invalid telemetry"):
        rangerlab.Adam(params, telemetry="yes")


def test_sampling_every_nth_step_records_only_then_on_the_fused_path(monkeypatch):
    from rangerlab import fused

    real, picked = fused.select, []
    monkeypatch.setattr(fused, "select", lambda *a: picked.append(real(*a)) or picked[-1])
    cls, kwargs, kind = PRESETS["ranger"]
    runs = {}
    for every in (False, 3):
        named = make_params()
        params = [p for _, p in named]
        opt = cls(named, telemetry=every, **kwargs)
        picked.clear()
        for t in range(1, STEPS + 1):
            got, checked = step_and_read(opt, params, t)
            if every and t % every == 0:
                assert_matches(got, expected(kind, opt.param_groups[0], *checked))
            elif every:
                assert got == {
                    "skipped": 0.0,
                    "lr/group0": 0.01,
                    "steps": 1.0,
                    "recorded_steps": 0.0,
                }
        runs[every] = params
        fused_steps = [i + 1 for i, k in enumerate(picked) if k is not None]
        if fused.available():  # recorded or not, every step is the fused one
            assert fused_steps == list(range(1, STEPS + 1))
    for a, b in zip(runs[False], runs[3]):  # sampling does not move the trajectory at all
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="Invalid telemetry"):
        rangerlab.Adam(params, telemetry=-2)


def test_interval_mean_and_peek():
    named = make_params()
    params = [p for _, p in named]
    opt = rangerlab.SGD(named, lr=0.1, telemetry=True)
    norms = []
    for t in (1, 2):
        for p, grad in zip(params, grads(t, params)):
            p.grad = grad
        norms.append(norm(params[0].grad))
        opt.step()
        peek = opt.telemetry(reset=False)
        assert peek["steps"] == t
    got = opt.telemetry()
    assert got["grad_norm/fc.weight"] == pytest.approx(sum(norms) / 2, rel=1e-12)
    assert got["steps"] == 2.0
    assert opt.telemetry() == {"steps": 0.0, "recorded_steps": 0.0}


@pytest.mark.parametrize("per_step", [False, True])
def test_tensors_at_different_step_counts_get_their_own_rectifier(per_step):
    """One bucket whose tensors' step counts differ (one got gradients only from the 4th step):
    each tensor's RAdam rectifier and adaptive flag follow its own count, whether the batch of
    waiting stats holds one count per step (all equal) or one per tensor."""
    from rangerlab.transforms.radam import rectification

    params = [p for _, p in make_params()]
    opt = rangerlab.Ranger(list(zip(NAMES, params)), telemetry=True, fused=True)
    reads = []
    for t in range(1, 12):
        for i, (p, grad) in enumerate(zip(params, grads(t, params))):
            p.grad = grad if (i != 0 or t > 3) else None
        opt.step()
        if per_step:
            reads.append(opt.telemetry())
    if not per_step:
        reads.append(opt.telemetry())

    def mean_over_reads(key):
        values = [r[key] for r in reads if key in r]
        return sum(values) / len(values)

    rect = {
        n: [rectification(c, 0.999) for c in counts]
        for n, counts in (("fc.weight", range(1, 9)), ("conv.weight", range(1, 12)))
    }
    for name, values in rect.items():
        adaptive = [r for r in values if r is not None]
        want = sum(adaptive) / len(adaptive)
        assert mean_over_reads(f"rectifier/{name}") == pytest.approx(want, rel=1e-12)
        assert mean_over_reads(f"adaptive/{name}") == pytest.approx(len(adaptive) / len(values))


def test_waiting_stats_are_bounded_by_rows(monkeypatch):
    """A bucket of many tensors turns its waiting stats into quantities after fewer steps
    (`telemetry.STATS_ROWS`), and the interval's means are still those of every step."""
    monkeypatch.setattr(telemetry, "STATS_ROWS", 2 * len(NAMES))  # 2 steps of this bucket
    assert telemetry.batch_limit(len(NAMES)) == 2
    params = [p for _, p in make_params()]
    opt = rangerlab.Ranger(list(zip(NAMES, params)), telemetry=True, fused=True)
    norms = []
    for t in range(1, 6):
        for p, grad in zip(params, grads(t, params)):
            p.grad = grad
        norms.append(params[0].grad.norm().item())
        opt.step()
        waiting = sum(map(len, telemetry.recorder(opt).pending.values()))
        assert waiting == t % 2
    got = opt.telemetry()
    assert got["grad_norm/fc.weight"] == pytest.approx(sum(norms) / 5, rel=1e-6)


@pytest.mark.parametrize("lr_kind", ["float", "tensor"])
@pytest.mark.parametrize("name", ["ranger", "ranger_lars", "adamw", "larc"])
def test_a_long_interval_is_the_mean_of_its_steps(name, lr_kind):
    """Read once after more steps than `telemetry.batch_limit` (the fused kernels' stats are
    turned into quantities in batches): every value is the mean, over the steps that recorded
    it, of what per-step reads give; with a learning rate that changes every step, RAdam's
    switch to adaptive steps and Lookahead syncs falling inside one batch."""
    cls, kwargs, _ = PRESETS[name]
    limit = telemetry.batch_limit(len(NAMES))
    steps = 2 * limit + 7
    runs = []
    for per_step in (True, False):
        params = [p for _, p in make_params()]
        kw = dict(kwargs, lr=torch.tensor(kwargs["lr"])) if lr_kind == "tensor" else kwargs
        opt = cls(list(zip(NAMES, params)), telemetry=True, fused=True, **kw)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (1.0 + 0.05 * t))
        reads = []
        for t in range(1, steps + 1):
            for p, grad in zip(params, grads(t, params)):
                p.grad = grad
            opt.step()
            sched.step()
            if per_step:
                reads.append(opt.telemetry())
        if not per_step:
            pending = telemetry.recorder(opt).pending
            assert sum(map(len, pending.values())) == steps % limit  # bounded
            reads.append(opt.telemetry())
        runs.append(reads)
    each, (once,) = runs
    want = {}
    for read in each:
        for key, value in read.items():
            if key not in ("steps", "recorded_steps"):
                want.setdefault(key, []).append(value)
    assert once.pop("steps") == once.pop("recorded_steps") == steps
    assert set(once) == set(want)
    for key, values in want.items():
        assert once[key] == pytest.approx(sum(values) / len(values), rel=1e-9, abs=1e-12), key
    if name.startswith("ranger"):  # RAdam's two phases and some syncs fell into one batch
        assert len(want["rectifier/fc.weight"]) == steps - 5
        assert len(want["lookahead_distance/fc.weight"]) == steps // kwargs["k"]


def test_names_from_factory_named_parameters_and_fallback():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    x = torch.randn(2, 3)
    for opt in (
        rangerlab.create_optimizer(model, "lamb", telemetry=True),
        rangerlab.Adam(model.named_parameters(), telemetry=True),
    ):
        model(x).sum().backward()
        opt.step()
        keys = {k.split("/", 1)[1] for k in opt.telemetry() if k.startswith("grad_norm/")}
        assert keys == {n for n, _ in model.named_parameters()}
    opt = rangerlab.Adam(model.parameters(), telemetry=True)
    model(x).sum().backward()
    opt.step()
    assert "grad_norm/group0.param1" in opt.telemetry()
    telemetry.name_parameters(opt, model)
    opt.step()
    assert "grad_norm/1.weight" in opt.telemetry()
    with pytest.raises(TypeError, match="model"):
        telemetry.name_parameters(opt, [1])


def test_names_follow_changes_to_the_group_between_steps():
    """The names of a recorded step are kept between steps: a tensor swapped into the group,
    or an edited ``param_names``, shows under its new name at the next step."""
    model = torch.nn.Linear(3, 2)
    opt = rangerlab.Adam(model.named_parameters(), telemetry=True)

    def step():
        for p in opt.param_groups[0]["params"]:
            p.grad = torch.ones_like(p)
        opt.step()
        return {k.split("/", 1)[1] for k in opt.telemetry() if k.startswith("grad_norm/")}

    assert step() == {"weight", "bias"}
    opt.param_groups[0]["param_names"][1] = "renamed_bias"
    assert step() == {"weight", "renamed_bias"}
    opt.param_groups[0]["params"][0] = torch.nn.Parameter(torch.zeros(2, 3))
    del opt.param_groups[0]["param_names"]  # the new tensor has no name: the fallback
    assert step() == {"group0.param0", "group0.param1"}


def test_skipped_steps_and_lr_per_group():
    p = torch.nn.Parameter(torch.ones(3))
    q = torch.nn.Parameter(torch.ones(2))
    opt = rangerlab.Adam(
        [{"params": [p]}, {"params": [q], "lr": 0.5}], lr=0.1, skip_nonfinite=True, telemetry=True
    )
    p.grad, q.grad = torch.tensor([1.0, math.inf, 0.0]), torch.ones(2)
    with pytest.warns(RuntimeWarning):
        opt.step()
    got = opt.telemetry()
    counts = {"steps": 1.0, "recorded_steps": 1.0}
    assert got == {"skipped": 1.0, "lr/group0": 0.1, "lr/group1": 0.5, **counts}
    p.grad = torch.ones(3)
    opt.step()
    assert opt.telemetry()["skipped"] == 0.0


def test_lookahead_wrapper_around_a_foreign_optimizer():
    named = make_params()
    params = [p for _, p in named]
    inner = torch.optim.SGD(named, lr=0.1, momentum=0.9)
    opt = rangerlab.Lookahead(inner, k=2, alpha=0.5, telemetry=True)
    for t in range(1, 5):
        w0 = [p.detach().clone() for p in params]
        slow0 = [opt.state[p].get("slow_param", w).clone() for p, w in zip(params, w0)]
        for p, grad in zip(params, grads(t, params)):
            p.grad = grad
        opt.step()
        got = opt.telemetry()
        want = {"lr/group0": 0.1, "skipped": 0.0, "steps": 1.0, "recorded_steps": 1.0}
        for name, p, w, slow in zip(NAMES, params, w0, slow0):
            fast = p.detach()
            if t % 2 == 0:
                fast = slow + (opt.state[p]["slow_param"] - slow) / 0.5
                want[f"lookahead_distance/{name}"] = norm(fast - slow)
            want[f"weight_norm/{name}"] = norm(w)
            want[f"grad_norm/{name}"] = norm(p.grad)
            want[f"update_norm/{name}"] = norm(fast - w)
            want[f"update_ratio/{name}"] = norm(fast - w) / norm(w)
        assert_matches(got, want)


def test_lookahead_wrapper_over_a_rangerlab_optimizer_and_factory():
    model = torch.nn.Linear(3, 2)
    opt = rangerlab.create_optimizer(model, "adamw", lookahead=True, k=1, telemetry=True)
    assert isinstance(opt, rangerlab.Lookahead)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    got = opt.telemetry()
    assert {"adaptive_lr_mean/weight", "lookahead_distance/weight", "update_norm/bias"} <= set(got)
    assert got["steps"] == 1.0
    wrapped = rangerlab.Lookahead(rangerlab.RAdam(model.named_parameters()), telemetry=True)
    assert all(g["telemetry"] for g in wrapped.optimizer.param_groups)
    fused_inner = rangerlab.Lookahead(
        rangerlab.Adam(model.parameters(), fused=True), telemetry=True
    )
    assert all(g["telemetry"] and g["fused"] for g in fused_inner.optimizer.param_groups)


def test_low_precision_weights_record_in_float32():
    p = torch.nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.bfloat16))
    opt = rangerlab.LARS([("w", p)], lr=1.0, momentum=0.0, trust_coefficient=0.1, telemetry=True)
    p.grad = torch.tensor([0.0, 1.0], dtype=torch.bfloat16)
    opt.step()
    got = opt.telemetry()
    assert got["weight_norm/w"] == 5.0 and got["grad_norm/w"] == 1.0
    assert got["trust_ratio/w"] == pytest.approx(0.5, rel=1e-6)
    assert got["update_norm/w"] == pytest.approx(0.5, rel=1e-6)


def test_plot_telemetry_heatmap_and_first_steps_panel():
    pytest.importorskip("matplotlib", reason="plots need the 'lab' extra")
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    named = make_params()
    params = [p for _, p in named]
    opt = rangerlab.LAMB(named, lr=0.01, telemetry=True)
    records = []
    for t in range(1, 5):
        for p, grad in zip(params, grads(t, params)):
            p.grad = grad
        opt.step()
        records.append({"step": t, **opt.telemetry()})
    fig = rangerlab.plot_telemetry(records, "trust_ratio", first_steps=3)
    heat, side = fig.axes[0], fig.axes[1]
    want = [[math.log10(r[f"trust_ratio/{n}"]) for r in records] for n in NAMES]
    np.testing.assert_allclose(heat.collections[0].get_array().reshape(3, 4), want, rtol=1e-6)
    assert len(fig.axes) == 3  # heatmap, adaptive-lr panel, colour bar
    assert [t.get_text() for t in heat.get_yticklabels()] == NAMES
    assert (
        len(side.lines) == 3
        and side.lines[0].get_ydata()[0] == records[0]["adaptive_lr_cv/fc.weight"]
    )
    with pytest.raises(ValueError, match="rectifier"):
        rangerlab.plot_telemetry(records, "rectifier")


def test_the_package_imports_without_matplotlib():
    import subprocess
    import sys

    code = "import sys; sys.modules['matplotlib'] = None; import rangerlab; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_grad_scaler_steps_record_unscaled_gradients_and_skips():
    model = torch.nn.Linear(3, 2)
    opt = rangerlab.LARS(model.named_parameters(), lr=0.1, telemetry=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    x = torch.randn(4, 3)
    loss = model(x).square().mean()
    (plain,) = torch.autograd.grad(loss, model.weight, retain_graph=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    got = opt.telemetry()
    assert got["grad_norm/weight"] == pytest.approx(norm(plain), rel=1e-6)
    model.weight.grad = torch.full_like(model.weight, math.inf)  # GradScaler skips this step
    scaler.step(opt)
    assert opt.telemetry()["steps"] == 0.0  # a step torch skips is not a step


@pytest.mark.parametrize("name", ["ranger", "ranger_lars", "lars", "adam", "sgd"])
def test_float32_sums_over_many_tasks_and_spans(name, monkeypatch):
    """The fused kernels' float32 sums, split over parallel tasks, spans and (trust ratios)
    batches, against the reference path's float32 reductions (torch's own norms, std_mean)."""
    from rangerlab import fused
    from rangerlab.fused import plans

    if not fused.available():
        pytest.skip("no C++ compiler: the fused kernels cannot be built here")
    monkeypatch.setattr(plans, "BATCH", 40_000)  # several trust-ratio batches
    # GC rows of 297 elements and of 9,000, and tasks of 32,768 (both longer than a span, kStatSpan)
    shapes = {
        "conv.weight": (300, 3, 9, 11),
        "long.weight": (6, 9_000),
        "flat": (70_001,),
        "bias": (5,),
    }
    cls, kwargs, _ = PRESETS[name]
    reads = []
    for path in ({"fused": True}, {"foreach": True}):
        gen = torch.Generator().manual_seed(3)
        named = [(n, torch.nn.Parameter(torch.randn(s, generator=gen))) for n, s in shapes.items()]
        opt = cls(named, telemetry=True, **path, **kwargs)
        got = []
        for t in range(1, 8):
            gen_g = torch.Generator().manual_seed(50 + t)
            for _, p in named:
                p.grad = torch.randn(p.shape, generator=gen_g) * (1 + 0.5 * t)
            opt.step()
            got.append(opt.telemetry())
        reads.append(got)
    for step, (fast, ref) in enumerate(zip(*reads), start=1):
        assert set(fast) == set(ref), (step, sorted(set(fast) ^ set(ref)))
        for key, value in ref.items():
            assert fast[key] == pytest.approx(value, rel=2e-5, abs=1e-7), (step, key)


class _NoRecords:
    """A fused step that cannot fill telemetry stats (as FSDP2 shards' step was before its sums
    were combined over ranks)."""

    records = False

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, *args, **kwargs):
        assert "stats" not in kwargs
        return self.inner(*args, **kwargs)


def test_a_kernel_that_cannot_record_sends_the_recorded_step_to_the_reference_path(monkeypatch):
    """A fused step that does not record: a recorded step runs the probes on the reference
    path (and the unrecorded ones stay fused)."""
    from rangerlab import fused
    from rangerlab.fused import sharded

    # FSDP2 shards' step records when its kernel does (its sums are combined over the ranks)
    kernel = fused.FusedKernel("adam")
    assert sharded.ShardedStep(kernel).records is True
    assert sharded.ShardedStep(_NoRecords(kernel)).records is False
    real = fused.select

    def no_records(*args):
        kernel = real(*args)
        return None if kernel is None else _NoRecords(kernel)

    monkeypatch.setattr(fused, "select", no_records)
    cls, kwargs, kind = PRESETS["ranger"]
    named = make_params()
    params = [p for _, p in named]
    opt = cls(named, telemetry=2, **kwargs)
    probes = []
    real_probed = telemetry.probed
    monkeypatch.setattr(telemetry, "probed", lambda *a: probes.append(1) or real_probed(*a))
    for t in range(1, 5):
        got, checked = step_and_read(opt, params, t)
        if t % 2 == 0:
            assert_matches(got, expected(kind, opt.param_groups[0], *checked))
    assert len(probes) == 2  # steps 2 and 4 recorded through the probes
    opt = cls(named, fused=True, telemetry=True, **kwargs)
    for p, grad in zip(params, grads(1, params)):
        p.grad = grad
    if fused.available():
        with pytest.raises(ValueError, match="does not record"):
            opt.step()
