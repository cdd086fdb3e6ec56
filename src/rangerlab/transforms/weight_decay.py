"""Weight decay as a term added to the update."""

from __future__ import annotations

from torch import Tensor

from .base import Context, Transform


class AddDecayedWeights(Transform):
    """``u <- u + weight_decay * w``.

    Where it stands in the chain decides the algorithm: before Adam's moments it is L2
    regularisation (torch's ``Adam(weight_decay=...)``); after them it is decoupled weight decay
    (AdamW, Loshchilov & Hutter 2019), since the final ``w -= lr * u`` then shrinks ``w`` by
    ``lr * weight_decay * w`` outside the adaptive scaling.

    References:
        Loshchilov, Hutter. "Decoupled Weight Decay Regularization", ICLR 2019. arXiv:1711.05101.
    """

    hyperparams = {"weight_decay": 0.0}

    def update(self, updates: list[Tensor], ctx: Context) -> list[Tensor]:
        weight_decay = ctx.group["weight_decay"]
        if weight_decay != 0:
            ctx.ops.add_(updates, ctx.params, alpha=weight_decay)
        return updates


def add_decayed_weights() -> AddDecayedWeights:
    """Weight decay transform; see :class:`AddDecayedWeights`."""
    return AddDecayedWeights()
