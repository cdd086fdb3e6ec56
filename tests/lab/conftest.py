"""One tiny run of every experiment, shared by the lab's tests (it is the expensive part)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("matplotlib", reason="the lab needs the 'lab' extra: pip install -e '.[lab]'")

from rangerlab.lab import runner  # noqa: E402
from rangerlab.lab.experiments import EXPERIMENTS  # noqa: E402


@pytest.fixture(scope="session")
def tiny_report(tmp_path_factory):
    """The output folder of ``rangerlab run --tiny`` over every experiment, and its results."""
    out = tmp_path_factory.mktemp("report")
    runner.run_experiments(list(EXPERIMENTS), "tiny", out, threads=1, jobs=1, progress=False)
    return out, json.loads((out / "results.json").read_text())
