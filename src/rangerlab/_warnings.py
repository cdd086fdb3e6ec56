"""Warnings that point at the user's line, not at the rangerlab or torch frames above it."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch

_INTERNAL = (str(Path(__file__).parent), str(Path(torch.__file__).parent))


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` with the stack level of the first caller outside rangerlab and torch.

    An optimizer's warning is raised a varying number of frames deep (torch's step hooks, the
    ``no_grad`` decorator, a Lookahead wrapper); a fixed ``stacklevel`` would point inside them.
    """
    frame, level = sys._getframe(1), 2
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
