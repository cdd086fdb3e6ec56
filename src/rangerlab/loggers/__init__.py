"""Telemetry where users already look: TensorBoard, Lightning and the Hugging Face Trainer.

* `log_telemetry` writes an optimizer's telemetry to a TensorBoard ``SummaryWriter`` (or
  anything with ``add_scalar``);
* ``rangerlab.loggers.lightning.TelemetryCallback`` logs it to a Lightning Trainer's loggers;
* ``rangerlab.loggers.huggingface.TelemetryCallback`` adds it to a ``transformers.Trainer``'s log
  history (and to a ``SummaryWriter`` if given).

Each logs under ``rangerlab/<quantity>/<parameter name>`` (``rangerlab/trust_ratio/layer1.0.conv1
.weight``) every ``every_n_steps`` optimizer steps, the values being the means over those steps,
and keeps the records (``{"step": step, "<quantity>/<name>": value, ...}``) in ``.records`` for
`rangerlab.plot_telemetry`. The optimizer needs ``telemetry=True`` (see
`rangerlab.telemetry`); the callbacks name its tensors after the model they train.
"""

from __future__ import annotations

from typing import Any

import torch

from .. import telemetry

PREFIX = "rangerlab"


def telemetry_source(optimizer: Any) -> Any:
    """The optimizer with a ``telemetry()`` method inside wrappers (Accelerate's, Lightning's)."""
    seen = 0
    while optimizer is not None and seen < 8:
        if callable(getattr(optimizer, "telemetry", None)):
            return optimizer
        optimizer = getattr(optimizer, "optimizer", None)
        seen += 1
    return None


def name_after(optimizer: Any, model: torch.nn.Module | None) -> None:
    """Name the telemetry of ``optimizer`` (inside any wrappers) after ``model``'s parameters."""
    source = telemetry_source(optimizer)
    if source is not None and model is not None:
        telemetry.name_parameters(source, model)


def collect(optimizer: Any, model: torch.nn.Module | None = None) -> dict[str, float]:
    """Read (and reset) the telemetry of ``optimizer``, naming its tensors after ``model``.

    Returns ``{}`` for an optimizer without telemetry.
    """
    name_after(optimizer, model)
    source = telemetry_source(optimizer)
    return {} if source is None else source.telemetry()


def log_telemetry(
    writer: Any, optimizer: Any, step: int, *, model: torch.nn.Module | None = None
) -> dict[str, float]:
    """Write ``optimizer``'s telemetry since the last read to ``writer`` at ``step``.

    ``writer`` is a ``torch.utils.tensorboard.SummaryWriter`` (or has its ``add_scalar``); each
    value goes under ``rangerlab/<key>``. Returns the values written (keys without the prefix).

    Example::

        writer = SummaryWriter("runs/ranger")
        opt = rangerlab.Ranger(model.named_parameters(), telemetry=True)
        for step, batch in enumerate(loader):
            ...
            opt.step()
            if step % 50 == 0:
                log_telemetry(writer, opt, step)
    """
    values = collect(optimizer, model)
    for key, value in values.items():
        writer.add_scalar(f"{PREFIX}/{key}", value, step)
    return values


def check_every(every_n_steps: Any) -> int:
    """``every_n_steps`` validated: a positive int."""
    if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
        raise ValueError(f"Invalid every_n_steps: {every_n_steps!r} (must be a positive int)")
    return every_n_steps
