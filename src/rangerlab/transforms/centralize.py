"""Gradient Centralization (Yong et al., ECCV 2020)."""

from __future__ import annotations

import math

from torch import Tensor

from .base import Context, Transform


def centralized(grad: Tensor) -> Tensor:
    """Return ``grad`` minus its mean over every dimension but the first (a new tensor).

    $$
    \\hat g_{i,\\ldots} = g_{i,\\ldots} - \\operatorname{mean}_{j,\\ldots}\\, g_{i,j,\\ldots}
    $$

    that is ``g - g.mean(dim=(1, ..., n-1), keepdim=True)``: each output channel of a conv or
    linear weight gets a zero-mean gradient. Tensors with ``dim() <= 1`` (biases, norm weights,
    scalars) are returned unchanged (as a copy).

    Args:
        grad: a gradient (not modified).

    Returns:
        The centralized gradient, a new tensor.

    Examples:
        >>> import torch
        >>> centralized(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        tensor([[-0.5000,  0.5000],
                [-0.5000,  0.5000]])

    References:
        Yong, Huang, Hua, Zhang. "Gradient Centralization: A New Optimization Technique for Deep
        Neural Networks", ECCV 2020. arXiv:2004.01461.
    """
    if grad.dim() <= 1:
        return grad.clone()
    return grad - grad.mean(dim=tuple(range(1, grad.dim())), keepdim=True)


class Centralize(Transform):
    """Gradient Centralization as the first link of a chain.

    $$
    u \\leftarrow u - \\operatorname{mean}_{\\text{dims } 1,\\ldots,n-1}(u)
    $$

    for every tensor with ``dim() > 1`` (as [`centralized`][rangerlab.transforms.centralized]);
    1-D and 0-D tensors are untouched. Put it first, so it sees the raw gradient (before coupled
    weight decay).

    Param-group keys (with defaults): ``gc`` (True in a hand-built chain; the presets set it from
    their ``gc`` argument): centralize only where it is true. No state.

    Examples:
        >>> Centralize.hyperparams
        {'gc': True}

    References:
        Yong, Huang, Hua, Zhang. "Gradient Centralization: A New Optimization Technique for Deep
        Neural Networks", ECCV 2020. arXiv:2004.01461.
    """

    hyperparams = {"gc": True}

    def update(self, updates: list[Tensor], ctx: Context) -> list[Tensor]:
        if ctx.group["gc"]:
            removed, index = [], []
            for i, u in enumerate(updates):
                if u.dim() > 1:
                    mean = u.mean(dim=tuple(range(1, u.dim())), keepdim=True)
                    u.sub_(mean)
                    if ctx.telemetry is not None:  # the norm of the mean broadcast over u
                        removed.append(
                            mean.norm() * math.sqrt(u[0].numel()) if u.numel() else u.new_zeros(())
                        )
                        index.append(i)
            if ctx.telemetry is not None:
                ctx.telemetry.add("gc_removed_norm", removed, index)
        return updates


def centralize() -> Centralize:
    """Gradient Centralization as a link of a chain (put it first).

    Returns:
        A new [`Centralize`][rangerlab.transforms.Centralize]; it reads ``gc`` (default True)
        from the param group.

    Examples:
        Each row of the update loses its mean, ``[[1, 2], [3, 4]] -> [[-.5, .5], [-.5, .5]]``:

        >>> import torch
        >>> from rangerlab import Chain
        >>> w = torch.nn.Parameter(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        >>> w.grad = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
        >>> Chain([w], [centralize()], lr=1.0).step()
        >>> w.detach()
        tensor([[1.5000, 1.5000],
                [3.5000, 3.5000]])
    """
    return Centralize()
