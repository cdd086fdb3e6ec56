"""A Hugging Face ``TrainerCallback`` that logs the telemetry (needs ``transformers``)."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from . import PREFIX, check_every, collect, name_after


class TelemetryCallback(TrainerCallback):
    """Add the optimizer's telemetry to the Trainer's log history every ``every_n_steps`` steps.

    Each entry of ``trainer.state.log_history`` it adds holds ``step`` and
    ``rangerlab/<quantity>/<parameter name>`` keys (means over the steps since the last entry);
    the history is saved with every checkpoint. With ``writer`` (a TensorBoard
    ``SummaryWriter``) the values are written there too.

    Args:
        every_n_steps: the interval, in optimizer steps (``state.global_step``).
        writer: optional ``SummaryWriter`` (or anything with ``add_scalar``).

    Example::

        opt = rangerlab.create_optimizer(model, "ranger", lr=1e-3, telemetry=True)
        trainer = Trainer(model=model, args=args, optimizers=(opt, None),
                          callbacks=[TelemetryCallback(every_n_steps=50)])
    """

    def __init__(self, every_n_steps: int = 50, writer: Any = None):
        self.every_n_steps = check_every(every_n_steps)
        self.writer = writer
        self.records: list[dict[str, float]] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        name_after(kwargs.get("optimizer"), kwargs.get("model"))  # names from the first step on

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        step = state.global_step
        if step % self.every_n_steps:
            return
        values = collect(kwargs.get("optimizer"), kwargs.get("model"))
        if not values:
            return
        self.records.append({"step": float(step), **values})
        logged = {f"{PREFIX}/{key}": value for key, value in values.items()}
        state.log_history.append({**logged, "step": step})
        if self.writer is not None:
            for key, value in logged.items():
                self.writer.add_scalar(key, value, step)
