"""One rank of ``test_zero_all.py``: ZeroRedundancyOptimizer over every name of the factory.

``python _zero_all_worker.py zero_all RANK WORLD_SIZE PORT OUT_DIR``, as ``_worker.py`` (whose
model, batches, training loop and process-group set-up it reuses) runs its scenarios. Every preset
class is behind at least one factory name, so this runs every preset under ZeRO too.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from torch.nn.parallel import DistributedDataParallel

import rangerlab
from rangerlab.factory import optimizer_info

_spec = importlib.util.spec_from_file_location(
    "rangerlab_distributed_worker", Path(__file__).with_name("_worker.py")
)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)

#: Settings per name under which each part acts within ``worker.STEPS`` steps: weight decay,
#: momentum, trust ratios, GC, Lookahead syncs (k=3) and RAdam's rectified steps (from step 6).
SETTINGS = {
    "sgd": {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01, "gc": True},
    "adam": {"lr": 0.01, "weight_decay": 0.01},
    "adamw": {"lr": 0.01, "weight_decay": 0.1},
    "radam": {"lr": 0.01, "weight_decay": 0.01, "gc": True},
    "lars": {"lr": 1.0, "trust_coefficient": 0.02, "weight_decay": 1e-3},
    "larc": {"lr": 0.5, "trust_coefficient": 0.02, "weight_decay": 1e-3, "nesterov": True},
    "lamb": {"lr": 0.01, "weight_decay": 0.01, "max_weight_norm": 1.0},
    "ranger": {"lr": 0.01, "weight_decay": 1e-3, "k": 3},
    "ranger_lars": {"lr": 0.01, "weight_decay": 1e-3, "k": 3, "max_weight_norm": 1.0},
}


def zero_all(rank: int, world: int, out: str) -> dict:
    """Each name's class as ZeroRedundancyOptimizer's ``optimizer_class``, trained on DDP."""
    results = {}
    for name in rangerlab.list_optimizers():
        info = optimizer_info(name)
        model = DistributedDataParallel(worker.build_model())
        opt = worker.zero_optimizer(model.parameters(), info.cls, **info.fixed, **SETTINGS[name])
        worker.train(model, opt, range(worker.STEPS), rank, world)
        results[name] = worker.full_params(model.module)
        del model, opt  # one DDP model and ZeRO optimizer alive at a time (see worker.main)
    return results


def reference(name: str) -> dict:
    """One process, whole batches: ``create_optimizer(params, name, ...)`` without ZeRO."""
    model = worker.build_model()
    opt = rangerlab.create_optimizer(model.parameters(), name, **SETTINGS[name])
    worker.train(model, opt, range(worker.STEPS))
    return worker.full_params(model)


if __name__ == "__main__":
    worker.SCENARIOS["zero_all"] = zero_all
    worker.main()
