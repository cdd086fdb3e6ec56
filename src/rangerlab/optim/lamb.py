"""LAMB, as a chain."""

from __future__ import annotations

from collections.abc import Iterable

from ..transforms import add_decayed_weights, centralize, scale_by_adam, scale_by_trust_ratio
from .chain import Chain, settings


def lamb_chain(group: dict) -> list:
    """``centralize -> scale_by_adam -> add_decayed_weights -> scale_by_trust_ratio``."""
    return [centralize(), scale_by_adam(), add_decayed_weights(), scale_by_trust_ratio()]


class LAMB(Chain):
    """LAMB: Adam's direction plus decoupled decay, scaled per tensor by the layer-wise trust ratio.

    With Adam's bias-corrected direction ``a = m_hat / (sqrt(v_hat) + eps)``:

    .. math::
        u = a + \\lambda w,\\quad
        r = \\frac{\\min(\\|w\\|, \\text{max\\_weight\\_norm})}{\\|u\\|},\\quad
        w \\leftarrow w - \\text{lr}\\, r\\, u

    ``r`` is 1 where either norm is 0, and in a group whose ``trust_ratio`` is false (biases and
    norm weights, see :func:`rangerlab.create_optimizer`), which makes that group AdamW.

    Args:
        params: parameters or param groups.
        lr: learning rate.
        betas: ``(beta1, beta2)``, the EMA rates of Adam's moments.
        eps: added to ``sqrt(v_hat)``.
        weight_decay: ``lambda``, added to the direction before the trust ratio.
        max_weight_norm: cap on ``||w||`` in the ratio (None: no cap).
        gc: Gradient Centralization of the raw gradient.
        foreach, fused, master_weights, skip_nonfinite, telemetry: see
            :class:`rangerlab.Chain`.

    Examples:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
        >>> w.grad = torch.tensor([1.0, 0.0])
        >>> LAMB([w], lr=0.1).step()  # ||u|| = 1 on step 1, so the step is lr*||w|| = 0.5
        >>> w.detach()
        tensor([2.5000, 4.0000])

    References:
        You, Li, Reddi, et al. "Large Batch Optimization for Deep Learning: Training BERT in 76
        minutes", ICLR 2020. arXiv:1904.00962.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        max_weight_norm: float | None = 10.0,
        gc: bool = False,
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
        master_weights: bool = False,
        skip_nonfinite: bool = False,
        telemetry: bool | int = False,
    ):
        super().__init__(params, lamb_chain, **settings(locals()), trust_ratio=True)
