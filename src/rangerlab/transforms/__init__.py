"""Composable pieces of update rules. Chain them with [`Chain`][rangerlab.Chain].

Each transform reads its hyperparameters from the param group and is applied to lists of tensors.
The order of a chain is the algorithm, e.g. LAMB is
``[scale_by_adam(), add_decayed_weights(), scale_by_trust_ratio()]``.
"""

from .adam import ScaleByAdam, scale_by_adam
from .base import Context, Transform
from .centralize import Centralize, centralize, centralized
from .lookahead import LookaheadTransform, lookahead, sync_
from .momentum import Momentum, momentum
from .radam import ScaleByRAdam, rectification, scale_by_radam
from .trust_ratio import ScaleByLARS, ScaleByTrustRatio, scale_by_lars, scale_by_trust_ratio
from .weight_decay import AddDecayedWeights, add_decayed_weights

__all__ = [
    "AddDecayedWeights",
    "Centralize",
    "Context",
    "LookaheadTransform",
    "Momentum",
    "ScaleByAdam",
    "ScaleByLARS",
    "ScaleByRAdam",
    "ScaleByTrustRatio",
    "Transform",
    "add_decayed_weights",
    "centralize",
    "centralized",
    "lookahead",
    "momentum",
    "rectification",
    "scale_by_adam",
    "scale_by_lars",
    "scale_by_radam",
    "scale_by_trust_ratio",
    "sync_",
]
