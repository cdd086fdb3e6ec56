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

    $$
    u = a + \\lambda w,\\quad
    r = \\frac{\\min(\\|w\\|, c)}{\\|u\\|},\\quad
    w \\leftarrow w - \\text{lr}\\, r\\, u
    $$

    with ``c = max_weight_norm`` (no cap when it is None). ``r`` is 1 where either norm is 0, and
    in a group whose ``trust_ratio`` is false (biases and norm weights, see
    [`create_optimizer`][rangerlab.create_optimizer]), which makes that group AdamW. The chain is
    ``[centralize(), scale_by_adam(), add_decayed_weights(), scale_by_trust_ratio()]``.

    Args:
        params: parameters or param groups.
        lr: learning rate.
        betas: ``(beta1, beta2)``, the EMA rates of Adam's moments.
        eps: added to ``sqrt(v_hat)``.
        weight_decay: ``lambda``, added to the direction before the trust ratio.
        max_weight_norm: cap on ``||w||`` in the ratio (None: no cap).
        gc: Gradient Centralization of the raw gradient.
        foreach: torch's meaning (``False``: a per-tensor loop); see [`Chain`][rangerlab.Chain].
        fused: ``True`` insists on the fused step; ``None`` takes it where there is one.
        master_weights: keep float32 copies of bf16/fp16 weights in the state.
        skip_nonfinite: skip a step whose gradients hold inf or NaN.
        telemetry: record per-parameter quantities (norms, trust ratios, adaptive-lr statistics)
            each step, or every N-th step for an int N; read with
            [`telemetry()`][rangerlab.Chain.telemetry].

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
