"""Heavy-ball and Nesterov momentum, as torch.optim.SGD does them."""

from __future__ import annotations

from torch import Tensor

from .base import Context, Transform


def first_step(state: dict) -> bool:
    """Momentum's first-step rule (its one owner): without a buffer yet, the buffer is ``v = u``."""
    return "momentum_buffer" not in state


class Momentum(Transform):
    """Momentum with torch.optim.SGD's exact semantics.

    First step: ``v = u``. Then ``v <- momentum * v + (1 - dampening) * u``. The output is ``v``,
    or ``u + momentum * v`` with ``nesterov``. With ``momentum == 0`` the update passes through and
    no buffer is kept.

    State: ``momentum_buffer`` (created at the tensor's first step from the update itself).

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
    """Momentum transform; see :class:`Momentum`."""
    return Momentum()
