"""Heavy-ball and Nesterov momentum, as torch.optim.SGD does them."""

from __future__ import annotations

from torch import Tensor

from .base import Context, Transform


def first_step(state: dict) -> bool:
    """Momentum's first-step rule (its one owner): without a buffer yet, the buffer is ``v = u``."""
    return "momentum_buffer" not in state


class Momentum(Transform):
    """Momentum with torch.optim.SGD's exact semantics.

    $$
    v_1 = u_1,\\quad v_t = \\mu v_{t-1} + (1-\\tau) u_t,\\qquad
    u_t \\leftarrow v_t \\text{ or, with nesterov, } u_t + \\mu v_t
    $$

    With ``momentum == 0`` the update passes through and no buffer is kept.

    Param-group keys (with defaults): ``momentum`` (0.9), ``mu`` above; ``dampening`` (0.0),
    ``tau``; ``nesterov`` (False).

    State: ``momentum_buffer`` (created at the tensor's first step from the update itself).

    Examples:
        >>> Momentum.hyperparams
        {'momentum': 0.9, 'dampening': 0.0, 'nesterov': False}

    References:
        Polyak 1964; Sutskever, Martens, Dahl, Hinton. "On the importance of initialization and
        momentum in deep learning", ICML 2013.
    """

    hyperparams = {"momentum": 0.9, "dampening": 0.0, "nesterov": False}

    def update(self, updates: list[Tensor], ctx: Context) -> list[Tensor]:
        momentum = ctx.group["momentum"]
        if momentum == 0:
            return updates
        ops = ctx.ops
        old = [i for i, s in enumerate(ctx.states) if not first_step(s)]
        if old:
            bufs = [ctx.states[i]["momentum_buffer"] for i in old]
            ops.mul_(bufs, momentum)
            ops.add_(bufs, [updates[i] for i in old], alpha=1.0 - ctx.group["dampening"])
        if len(old) < len(updates):
            fresh = [i for i, s in enumerate(ctx.states) if first_step(s)]
            for i, buf in zip(fresh, ops.clone([updates[i] for i in fresh])):
                ctx.states[i]["momentum_buffer"] = buf
        bufs = ctx.state("momentum_buffer")
        if ctx.group["nesterov"]:
            ops.add_(updates, bufs, alpha=momentum)
        else:
            # Copy rather than hand out the buffers, so later links may rescale u in place.
            ops.copy_(updates, bufs)
        return updates


def momentum() -> Momentum:
    """Heavy-ball or Nesterov momentum as a link of a chain.

    Returns:
        A new [`Momentum`][rangerlab.transforms.Momentum]; it reads ``momentum`` (default 0.9),
        ``dampening`` (0.0) and ``nesterov`` (False) from the param group.

    Examples:
        A constant gradient 1 with ``momentum=0.5``: the buffer goes 1, 1.5, so the weight moves
        by 0.1 and then 0.15.

        >>> import torch
        >>> from rangerlab import Chain
        >>> w = torch.nn.Parameter(torch.tensor([1.0]))
        >>> opt = Chain([w], [momentum()], lr=0.1, momentum=0.5)
        >>> for _ in range(2):
        ...     w.grad = torch.tensor([1.0])
        ...     opt.step()
        >>> w.detach()
        tensor([0.7500])
    """
    return Momentum()
