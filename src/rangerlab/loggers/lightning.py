"""A Lightning callback that logs the optimizers' telemetry (needs the ``lightning`` package)."""

from __future__ import annotations

from typing import Any

import lightning as L

from . import PREFIX, check_every, collect, name_after


class TelemetryCallback(L.Callback):
    """Log each optimizer's telemetry to the Trainer's loggers every ``every_n_steps`` steps.

    Keys are ``rangerlab/<quantity>/<parameter name>`` (with ``/opt<i>`` after ``rangerlab`` when
    the module has several optimizers); values are means over the steps since the last log.

    Args:
        every_n_steps: the logging interval, in optimizer steps (``trainer.global_step``).

    Example::

        def configure_optimizers(self):
            return rangerlab.create_optimizer(self, "ranger_lars", lr=1e-3, telemetry=True)

        trainer = L.Trainer(callbacks=[TelemetryCallback(every_n_steps=50)])
    """

    def __init__(self, every_n_steps: int = 50):
        self.every_n_steps = check_every(every_n_steps)
        self.records: list[dict[str, float]] = []

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        for optimizer in trainer.optimizers:  # names from the first step on
            name_after(optimizer, pl_module)

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if (
            step == 0
            or step % self.every_n_steps
            or (self.records and self.records[-1]["step"] == step)
        ):
            return
        several = len(trainer.optimizers) > 1
        metrics, record = {}, {"step": float(step)}
        for i, optimizer in enumerate(trainer.optimizers):
            values = collect(optimizer, pl_module)
            scope = f"{PREFIX}/opt{i}" if several else PREFIX
            metrics.update({f"{scope}/{key}": value for key, value in values.items()})
            record.update(values if not several else {f"opt{i}/{k}": v for k, v in values.items()})
        if len(record) > 1:
            self.records.append(record)
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)
