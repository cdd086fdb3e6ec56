"""rangerlab: modern deep-learning optimizers for PyTorch, as composable pieces.

SGD, Adam/AdamW, RAdam, LARS/LARC, Ranger, Ranger-LARS and a Lookahead wrapper for any optimizer,
all ``torch.optim.Optimizer`` subclasses built from the transforms in
[`rangerlab.transforms`][rangerlab.transforms].
"""

from . import amp, schedules, telemetry, transforms
from .factory import create_optimizer, list_optimizers, param_groups
from .lr_find import LRFindResult, lr_find
from .optim import LAMB, LARS, SGD, Adam, Chain, Lookahead, RAdam, Ranger, RangerLARS
from .plot import plot_telemetry

__version__ = "0.1.0"

__all__ = [
    "SGD",
    "LAMB",
    "LARS",
    "Adam",
    "Chain",
    "LRFindResult",
    "Lookahead",
    "RAdam",
    "Ranger",
    "RangerLARS",
    "amp",
    "create_optimizer",
    "list_optimizers",
    "lr_find",
    "param_groups",
    "plot_telemetry",
    "schedules",
    "telemetry",
    "transforms",
]
