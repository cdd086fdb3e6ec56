"""The transform protocol: one piece of an update rule, over lists of tensors.

A chain of transforms turns gradients into a step. The :class:`~rangerlab.Chain` optimizer hands
every transform the same :class:`Context` for one bucket of tensors (one device and dtype of one
param group), runs ``update`` in chain order on a private copy of the gradients, applies
``w -= lr * u``, then runs ``after_update`` (Lookahead's synchronisation lives there).

Hyperparameters are never stored on a transform: it declares the param-group keys it reads, with
defaults, in :attr:`Transform.hyperparams`, and reads their current values from ``ctx.group``. So
LR schedulers, per-group settings and ``state_dict`` all work unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from .._ops import Ops


@dataclass
class Context:
    """What a transform sees for one bucket of tensors.

    Attributes:
        group: the param group (hyperparameters are read from it on every step).
        params: the weights the update is applied to: the parameters themselves, or their float32
            working copies for bf16/fp16 parameters (the master weights when ``master_weights``).
        states: one state dict per tensor (``optimizer.state[p]``).
        steps: per-tensor step number, 1 at a tensor's first update (as torch.optim counts).
        ops: the list operations to use (foreach kernels or a per-tensor loop).
    """

    group: dict[str, Any]
    params: list[Tensor]
    states: list[dict[str, Any]]
    steps: list[int]
    ops: Ops

    def state(self, key: str) -> list[Tensor]:
        """The per-tensor state entry ``key`` as a list."""
        return [s[key] for s in self.states]


class Transform:
    """Base class of the chain's pieces.

    Subclasses override what they need:

    * ``hyperparams``: param-group keys read by the transform, with their defaults;
    * ``state_keys`` and :meth:`init`: per-tensor state, created before the tensor's first update;
    * :meth:`init_group`: group-level state, set when a param group joins the optimizer;
    * :meth:`begin_step`: once per param group per optimizer step (even with no gradients), and
      :meth:`skip_step` to take it back when GradScaler found inf/NaN;
    * :meth:`update`: rewrite the update direction ``u`` (a private list the transform may change
      in place) and return it;
    * :meth:`after_update`: act on the weights after ``w -= lr * u``.
    """

    hyperparams: ClassVar[Mapping[str, Any]] = {}
    state_keys: ClassVar[tuple[str, ...]] = ()

    def init(self, param: Tensor, group: Mapping[str, Any]) -> dict[str, Tensor]:
        """Per-tensor state for ``param`` (a float32 working copy for low-precision weights)."""
        return {}

    def init_group(self, group: dict[str, Any], others: list[dict[str, Any]]) -> None:
        """Called when ``group`` joins the optimizer, after the groups ``others``."""

    def begin_step(self, group: dict[str, Any]) -> None:
        """Called once per param group at the start of every optimizer step."""

    def skip_step(self, group: dict[str, Any], skipped: Tensor) -> None:
        """Called after a step that GradScaler may have skipped (``skipped`` nonzero): take back
        what :meth:`begin_step` did, on ``skipped``'s device, without reading it on the host."""

    def update(self, updates: list[Tensor], ctx: Context) -> list[Tensor]:
        """Return the transformed update direction."""
        return updates

    def after_update(self, ctx: Context) -> None:
        """Called after the update has been applied to ``ctx.params``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
