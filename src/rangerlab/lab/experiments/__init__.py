"""The lab's experiments, in report order: each module declares one
:class:`~rangerlab.lab.protocol.Experiment` as ``EXPERIMENT``."""

from __future__ import annotations

from ..protocol import Experiment
from . import amp, gc, large_batch, layer_table, lookahead, race, ranger_nets, warmup

_ORDER = [warmup, lookahead, ranger_nets, large_batch, layer_table, gc, amp, race]

#: id -> experiment declaration, in report order.
EXPERIMENTS: dict[str, Experiment] = {m.EXPERIMENT.id: m.EXPERIMENT for m in _ORDER}
