"""Every experiment is a declaration run by the one runner, and yields a complete, consistent,
honest result (tiny configuration)."""

import dataclasses
import json
import math

import pytest
import torch

import rangerlab
from rangerlab.lab import optimizers, runner, stats
from rangerlab.lab.experiments import EXPERIMENTS
from rangerlab.lab.protocol import Experiment

PNG = b"\x89PNG\r\n\x1a\n"


def _numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


def test_every_experiment_is_a_complete_declaration():
    assert list(EXPERIMENTS) == [
        "warmup",
        "lookahead",
        "ranger-nets",
        "large-batch",
        "layer-table",
        "gc",
        "amp",
        "race",
    ]
    for exp_id, exp in EXPERIMENTS.items():
        assert isinstance(exp, Experiment) and exp.id == exp_id
        assert exp.claim and exp.claim_zh and exp.shows and exp.cannot_show
        assert set(exp.configs) == set(runner.MODES) == set(exp.seeds)
        for mode, cfg in exp.configs.items():
            assert exp.arms(cfg)
            for c in exp.comparisons(cfg):
                assert c.direction in (1, -1)
            if exp.comparisons(cfg) and mode != "tiny":  # every verdict can be reached
                voting = sum(c.in_verdict for c in exp.comparisons(cfg))
                assert exp.seeds[mode] >= stats.seeds_needed(voting), (exp_id, mode)
        if exp_id != "race":
            assert exp.seeds["full"] >= 8
    assert EXPERIMENTS["gc"].seeds["full"] >= 8


def test_arms_use_the_factory_registry_names():
    registry = set(rangerlab.list_optimizers())
    for name, _, _ in optimizers.ARMS.values():
        assert name in registry
    assert "ranger_lars" in optimizers.ARMS and "ranger-lars" not in optimizers.ARMS


def test_results_hold_every_experiment_complete(tiny_report):
    out, results = tiny_report
    assert list(results["experiments"]) == list(EXPERIMENTS)
    for exp_id, exp in results["experiments"].items():
        assert exp["verdict"]["status"] in (
            stats.SUPPORTED,
            stats.CONTRADICTED,
            stats.INCONCLUSIVE,
            stats.ILLUSTRATION,
        ), exp_id
        assert all(math.isfinite(x) for x in _numbers(exp["runs"])), exp_id
        for c in exp["comparisons"]:
            assert len(c["differences"]) == len(exp["seeds"])
        if exp["comparisons"]:
            assert "[" in exp["verdict"]["detail"]  # every verdict cites its interval
            # two seeds can never decide: the tiny run is inconclusive, and says why
            assert exp["verdict"]["status"] == stats.INCONCLUSIVE
            assert exp["power"]["provisional"]
    tuned = results["experiments"]["gc"]["tuning"]
    assert set(tuned) == {"adam", "adam_gc"}
    assert results["experiments"]["gc"]["tuning_seeds"][0] >= runner.TUNING_SEED


def test_figures_are_pngs_and_the_report_links_them(tiny_report):
    out, results = tiny_report
    page = (out / "report.html").read_text()
    figures = sorted((out / "figures").iterdir())
    assert len(figures) >= len(EXPERIMENTS)
    for fig in figures:
        assert fig.read_bytes().startswith(PNG)
        assert f'src="figures/{fig.name}"' in page
    for exp_id in results["experiments"]:
        assert f'id="{exp_id}"' in page
    assert page.count("What it cannot show") == len(EXPERIMENTS)
    assert "This is a preview" in page and "mean ± sd" in page and "[low, high]" in page
    assert not list(out.glob(".rangerlab-partial-*"))  # staging folder cleaned up


def test_results_json_is_strict_json(tiny_report):
    out, _ = tiny_report
    text = (out / "results.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


def test_the_same_seed_gives_two_arms_the_same_start_and_batches():
    from rangerlab.lab.training import train_digits

    seen = {}

    def spy(arm):
        def make(model):
            seen.setdefault(arm, [p.detach().clone() for p in model.parameters()])
            return optimizers.build(arm, model, 1e-3)

        return make

    a = train_digits(spy("adam"), 3, "val", steps=1, batch_size=32, eval_every=1)
    b = train_digits(spy("radam"), 3, "val", steps=1, batch_size=32, eval_every=1)
    assert all(torch.equal(x, y) for x, y in zip(seen["adam"], seen["radam"], strict=True))
    # RAdam's first step is a momentum step; different optimizers, same data: different results
    assert a["curve"]["train_loss"] != b["curve"]["train_loss"]


@pytest.mark.parametrize("exp_id", ["race", "warmup"])
def test_trials_are_deterministic_for_a_seed(exp_id, tiny_report):
    _, results = tiny_report
    exp = EXPERIMENTS[exp_id]
    stored = results["experiments"][exp_id]
    arm = next(iter(stored["runs"]))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the fixture's run used one thread; reductions depend on it
    try:
        again = exp.trial({**exp.configs["tiny"], "split": "test"}, arm, stored["seeds"][-1])
    finally:
        torch.set_num_threads(threads)
    assert json.loads(json.dumps(again)) == stored["runs"][arm][-1]


def test_worker_processes_give_the_same_results(tmp_path):
    one = runner.run_experiments(["layer-table"], "tiny", tmp_path / "a", jobs=1, progress=False)
    two = runner.run_experiments(["layer-table"], "tiny", tmp_path / "b", jobs=2, progress=False)
    assert one["experiments"]["layer-table"]["runs"] == two["experiments"]["layer-table"]["runs"]


def test_runner_tunes_on_validation_and_scores_fresh_seeds_on_test(tmp_path):
    calls = []

    def trial(cfg, arm, seed):
        calls.append((cfg["split"], cfg.get("lr"), arm, seed))
        good = {"a": 0.01, "b": 0.1}[arm]
        return {"loss": abs(cfg["lr"] - good), "acc": float(arm == "b") + seed * 1e-3}

    exp = dataclasses.replace(
        EXPERIMENTS["gc"],
        arms=lambda cfg: ["a", "b"],
        trial=trial,
        tuning=dataclasses.replace(
            EXPERIMENTS["gc"].tuning, grid=lambda cfg, arm: [0.001, 0.01, 0.1]
        ),
        comparisons=lambda cfg: [
            dataclasses.replace(c, effect=lambda m: m["b"]["acc"] - m["a"]["acc"], direction=1)
            for c in EXPERIMENTS["gc"].comparisons(cfg)[:1]
        ],
    )

    class Bar:
        def reset(self, total):
            self.total = total

        def update(self, n=1):
            pass

        def refresh(self):
            pass

    result = runner.run_one(exp, "quick", 6, runner.Executor(1, 1), Bar())
    assert result["tuning"]["a"]["lr"] == 0.01 and result["tuning"]["b"]["lr"] == 0.1
    # b's best was at the grid's end, so its grid grew one step past it (and no further)
    assert result["tuning"]["b"]["grid"] == pytest.approx([0.001, 0.01, 0.1, 1.0])
    assert result["tuning"]["a"]["added"] == 0 and result["tuning"]["b"]["added"] == 1
    assert not result["tuning"]["b"]["edge"] and not result["tuning"]["a"]["edge"]
    val = {c[3] for c in calls if c[0] == "val"}
    test = {c[3] for c in calls if c[0] == "test"}
    assert val.isdisjoint(test) and test == set(range(6))
    assert {(c[2], c[1]) for c in calls if c[0] == "test"} == {("a", 0.01), ("b", 0.1)}
    (cmp,) = result["comparisons"]
    assert cmp["status"] == stats.SUPPORTED and cmp["lo"] > 0  # six seeds, a real difference
    assert result["verdict"]["status"] == stats.SUPPORTED
