"""Every factory name (so every preset) under ZeroRedundancyOptimizer gives one process's result.

The README promises that every optimizer works unchanged under ``ZeroRedundancyOptimizer``;
``test_distributed.py`` runs three presets there, this file all of them, on 2 gloo processes.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import test_distributed

import rangerlab

_path = Path(__file__).with_name("_zero_all_worker.py")
_spec = importlib.util.spec_from_file_location("rangerlab_zero_all_worker", _path)
zero_all = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(zero_all)

NAMES = list(rangerlab.list_optimizers())


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(test_distributed, "WORKER_PATH", _path)
        return test_distributed.launch("zero_all", 2, tmp_path_factory.mktemp("zero_all"))


def test_every_name_and_preset_is_covered() -> None:
    assert set(zero_all.SETTINGS) == set(NAMES)
    classes = {rangerlab.factory.optimizer_info(n).cls for n in NAMES}
    presets = {rangerlab.SGD, rangerlab.Adam, rangerlab.RAdam, rangerlab.LARS, rangerlab.LAMB}
    assert classes >= presets | {rangerlab.Ranger, rangerlab.RangerLARS}


@pytest.mark.parametrize("name", NAMES)
def test_zero_redundancy_equals_one_process(results: dict, name: str) -> None:
    expected = zero_all.reference(name)
    test_distributed.assert_params_close(results[name], expected)
    untrained = zero_all.worker.full_params(zero_all.worker.build_model())
    test_distributed.assert_params_moved(expected, untrained)
