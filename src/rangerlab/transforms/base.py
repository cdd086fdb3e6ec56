"""The transform protocol: one piece of an update rule, over lists of tensors.

A chain of transforms turns gradients into a step. The [`Chain`][rangerlab.Chain] optimizer
hands every transform the same [`Context`][rangerlab.transforms.Context] for one bucket of tensors
(one device and dtype of one param group), runs ``update`` in chain order on a private copy of the
gradients, applies ``w -= lr * u``, then runs ``after_update`` (Lookahead's synchronisation lives
there).

Hyperparameters are never stored on a transform: it declares the param-group keys it reads, with
defaults, in ``Transform.hyperparams``, and reads their current values from ``ctx.group``. So
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
        telemetry: where the transform records its quantities (``telemetry.add(quantity,
            values)``, see `rangerlab.telemetry`), or None when telemetry is off.

    Examples:
        A transform that prints what it sees, then leaves the update as it is:

        >>> import torch
        >>> from rangerlab import Chain
        >>> class Show(Transform):
        ...     def update(self, updates, ctx):
        ...         print(ctx.steps, ctx.group["lr"], [p.tolist() for p in ctx.params])
        ...         return updates
        >>> w = torch.nn.Parameter(torch.tensor([1.0]))
        >>> w.grad = torch.tensor([1.0])
        >>> Chain([w], [Show()], lr=0.5).step()
        [1] 0.5 [[1.0]]
    """

    group: dict[str, Any]
    params: list[Tensor]
    states: list[dict[str, Any]]
    steps: list[int]
    ops: Ops
    telemetry: Any = None

    def state(self, key: str) -> list[Tensor]:
        """The per-tensor state entry ``key`` as a list."""
        return [s[key] for s in self.states]


class Transform:
    """Base class of the chain's pieces.

    A chain ``[t_1, ..., t_n]`` makes the step

    $$
    u \\leftarrow t_n(\\cdots t_1(g)),\\qquad w \\leftarrow w - \\text{lr}\\, u
    $$

    then runs each ``after_update``. Subclasses override what they need:

    * ``hyperparams``: param-group keys read by the transform, with their defaults;
    * ``state_keys`` and ``init``: per-tensor state, created before the tensor's first update;
    * ``init_group``: group-level state, set when a param group joins the optimizer;
    * ``begin_step``: once per param group per optimizer step in which some parameter of the
      optimizer has a gradient (a step with no gradients at all changes nothing), and
      ``skip_step`` to take it back when GradScaler found inf/NaN;
    * ``update``: rewrite the update direction ``u`` (a private list the transform may change
      in place) and return it;
    * ``after_update``: act on the weights after ``w -= lr * u``.

    Examples:
        signSGD as a one-link chain, with its own group key:

        >>> import torch
        >>> from rangerlab import Chain
        >>> class ScaleBySign(Transform):
        ...     hyperparams = {"scale": 1.0}
        ...     def update(self, updates, ctx):
        ...         return [ctx.group["scale"] * u.sign() for u in updates]
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
        >>> w.grad = torch.tensor([0.3, -2.0])
        >>> Chain([w], [ScaleBySign()], lr=0.1, scale=2.0).step()
        >>> w.detach()
        tensor([0.8000, 1.2000])
    """

    hyperparams: ClassVar[Mapping[str, Any]] = {}
    state_keys: ClassVar[tuple[str, ...]] = ()

    def init(self, param: Tensor, group: Mapping[str, Any]) -> dict[str, Tensor]:
        """Per-tensor state for ``param`` (a float32 working copy for low-precision weights)."""
        return {}

    def init_group(self, group: dict[str, Any], others: list[dict[str, Any]]) -> None:
        """Called when ``group`` joins the optimizer, after the groups ``others``."""

    def begin_step(self, group: dict[str, Any]) -> None:
        """Called once per param group at the start of every step that updates something."""

    def skip_step(self, group: dict[str, Any], skipped: Tensor) -> None:
        """Called after a step that GradScaler may have skipped (``skipped`` nonzero): take back
        what `begin_step` did, on ``skipped``'s device, without reading it on the host."""

    def update(self, updates: list[Tensor], ctx: Context) -> list[Tensor]:
        """Return the transformed update direction."""
        return updates

    def after_update(self, ctx: Context) -> None:
        """Called after the update has been applied to ``ctx.params``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
