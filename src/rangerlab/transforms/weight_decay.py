"""Weight decay as a term added to the update."""

from __future__ import annotations

from torch import Tensor

from .base import Context, Transform


class AddDecayedWeights(Transform):
    """Weight decay as a term of the update: ``u <- u + weight_decay * w``.

    $$
    u \\leftarrow u + \\lambda w
    $$

    Where it stands in the chain decides the algorithm: before Adam's moments it is L2
    regularisation (torch's ``Adam(weight_decay=...)``); after them it is decoupled weight decay
    (AdamW, Loshchilov & Hutter 2019), since the final ``w -= lr * u`` then shrinks ``w`` by
    ``lr * weight_decay * w`` outside the adaptive scaling.

    Param-group keys (with defaults): ``weight_decay`` (0.0), ``lambda`` above. No state.

    Examples:
        >>> AddDecayedWeights.hyperparams
        {'weight_decay': 0.0}

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
    """Weight decay as a link of a chain: ``u <- u + weight_decay * w``.

    Returns:
        A new [`AddDecayedWeights`][rangerlab.transforms.AddDecayedWeights]; it reads
        ``weight_decay`` (default 0.0) from the param group.

    Examples:
        With a zero gradient, only the decay moves the weight: ``2 - 0.1 * (0.5 * 2) = 1.9``.

        >>> import torch
        >>> from rangerlab import Chain
        >>> w = torch.nn.Parameter(torch.tensor([2.0]))
        >>> w.grad = torch.tensor([0.0])
        >>> Chain([w], [add_decayed_weights()], lr=0.1, weight_decay=0.5).step()
        >>> w.detach()
        tensor([1.9000])
    """
    return AddDecayedWeights()
