"""The lab's experiments, in report order.

Each experiment module defines ``ID``, ``TITLE``, ``DESCRIPTION`` (one line), ``CLAIM`` (what the
lecture says, tested), ``CONFIGS`` (``tiny``/``quick``/``full`` settings), ``run(cfg, seeds, bar)``
returning ``{"setup", "table", "verdict", "data"}`` of plain JSON values, and
``plot(result, fig_dir)`` that draws figures from that result alone (so ``rangerlab report`` can
redraw them from ``results.json``).
"""

from __future__ import annotations

from types import ModuleType

from . import (
    amp,
    gc,
    large_batch,
    layer_table,
    lr_sensitivity,
    optimizers_cnn,
    race,
    rnn,
    warmup_variance,
)

_ORDER = [
    race,
    lr_sensitivity,
    warmup_variance,
    optimizers_cnn,
    rnn,
    large_batch,
    layer_table,
    gc,
    amp,
]

#: id -> experiment module, in report order.
EXPERIMENTS: dict[str, ModuleType] = {m.ID: m for m in _ORDER}
