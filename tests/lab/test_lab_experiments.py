"""Every experiment runs (tiny configuration) and yields a complete, consistent result."""

import json
import math

import pytest
import torch

from rangerlab.lab import runner, stats
from rangerlab.lab.experiments import EXPERIMENTS

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


def test_every_experiment_has_its_metadata():
    assert list(EXPERIMENTS) == [
        "race",
        "lr-sensitivity",
        "warmup-variance",
        "optimizers-cnn",
        "rnn",
        "large-batch",
        "layer-table",
        "gc",
        "amp",
    ]
    for module in EXPERIMENTS.values():
        assert module.TITLE and module.CLAIM and module.DESCRIPTION
        assert set(module.CONFIGS) == set(runner.MODES)


def test_results_hold_every_experiment_complete(tiny_report):
    out, results = tiny_report
    assert list(results["experiments"]) == list(EXPERIMENTS)
    env = results["environment"]
    assert env["seeds"] == [0, 1] and env["threads"] == 1 and env["torch"]
    for exp_id, exp in results["experiments"].items():
        assert exp["verdict"]["status"] in (
            stats.SUPPORTED,
            stats.CONTRADICTED,
            stats.INCONCLUSIVE,
        ), exp_id
        assert exp["verdict"]["detail"] and exp["setup"]
        table = exp["table"]
        assert table["rows"], exp_id
        assert all(len(r) == len(table["columns"]) for r in table["rows"]), exp_id
        assert all(math.isfinite(x) for x in _numbers(exp["data"])), exp_id


def test_figures_are_pngs_and_the_report_links_them(tiny_report):
    out, results = tiny_report
    html = (out / "report.html").read_text()
    figures = sorted((out / "figures").iterdir())
    assert len(figures) >= len(EXPERIMENTS)
    for fig in figures:
        assert fig.read_bytes().startswith(PNG)
        assert f'src="figures/{fig.name}"' in html
    for exp_id, exp in results["experiments"].items():
        assert f'id="{exp_id}"' in html
        assert exp["verdict"]["status"] in html
    assert not list(out.glob(".rangerlab-partial-*"))  # staging folder cleaned up


def test_results_json_is_strict_json(tiny_report):
    out, _ = tiny_report
    text = (out / "results.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


@pytest.mark.parametrize("exp_id", ["race", "warmup-variance"])
def test_experiments_are_deterministic_for_a_seed(exp_id, tiny_report):
    _, results = tiny_report
    module = EXPERIMENTS[exp_id]

    class Bar:
        def reset(self, total):
            pass

        def update(self, n=1):
            pass

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the fixture's run used one thread; reductions depend on it
    try:
        again = module.run(module.CONFIGS["tiny"], [0, 1], Bar())
    finally:
        torch.set_num_threads(threads)
    assert again["data"] == json.loads(json.dumps(results["experiments"][exp_id]["data"]))
