"""Adam and AdamW, as a chain."""

from __future__ import annotations

from collections.abc import Iterable

from ..transforms import add_decayed_weights, centralize, scale_by_adam
from .chain import Chain, settings


def adam_chain(group: dict) -> list:
    """Adam: ``centralize -> add_decayed_weights -> scale_by_adam``; AdamW moves the decay last."""
    if group["decoupled_weight_decay"]:
        return [centralize(), scale_by_adam(), add_decayed_weights()]
    return [centralize(), add_decayed_weights(), scale_by_adam()]


class Adam(Chain):
    """Adam, or AdamW with ``decoupled_weight_decay=True``; torch.optim.Adam/AdamW's trajectory.

    $$
    m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g,\\quad
    v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g^2,\\quad
    w \\leftarrow w - \\text{lr}\\,
    \\frac{m_t/(1-\\beta_1^t)}{\\sqrt{v_t/(1-\\beta_2^t)}+\\epsilon}
    $$

    Weight decay ``lambda`` is added to ``g`` (L2) or, decoupled, as ``w <- w - lr*lambda*w``.
    With ``gc=True`` the raw gradient is centralized first.

    Args:
        params: parameters or param groups.
        lr: learning rate.
        betas: ``(beta1, beta2)``, the EMA rates of the moments.
        eps: added to the denominator.
        weight_decay: ``lambda``.
        decoupled_weight_decay: AdamW's decay instead of L2.
        gc: Gradient Centralization.
        foreach: torch's meaning (``False``: a per-tensor loop); see [`Chain`][rangerlab.Chain].
        fused: ``True`` insists on the fused step; ``None`` takes it where there is one.
        master_weights: keep float32 copies of bf16/fp16 weights in the state.
        skip_nonfinite: skip a step whose gradients hold inf or NaN.
        telemetry: record per-parameter quantities (norms, trust ratios, adaptive-lr statistics)
            each step, or every N-th step for an int N; read with
            [`telemetry()`][rangerlab.Chain.telemetry].

    Examples:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([1.0]))
        >>> w.grad = torch.tensor([2.0])
        >>> Adam([w], lr=0.1).step()  # first Adam step moves by lr*sign(g)
        >>> w.detach()
        tensor([0.9000])

    References:
        Kingma, Ba, ICLR 2015 (arXiv:1412.6980); Loshchilov, Hutter, ICLR 2019 (arXiv:1711.05101).
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        gc: bool = False,
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
        master_weights: bool = False,
        skip_nonfinite: bool = False,
        telemetry: bool | int = False,
    ):
        super().__init__(params, adam_chain, **settings(locals()))
