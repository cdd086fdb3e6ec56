"""RAdam, as a chain."""

from __future__ import annotations

from collections.abc import Iterable

from ..transforms import add_decayed_weights, centralize, scale_by_radam
from .chain import Chain, settings


def radam_chain(group: dict) -> list:
    """``centralize -> add_decayed_weights -> scale_by_radam``; decoupled decay goes last."""
    if group["decoupled_weight_decay"]:
        return [centralize(), scale_by_radam(), add_decayed_weights()]
    return [centralize(), add_decayed_weights(), scale_by_radam()]


class RAdam(Chain):
    """Rectified Adam; torch.optim.RAdam's trajectory.

    With Adam's moments ``m_t``, ``v_t``, the bias-corrected momentum
    ``m_hat = m_t/(1-beta1^t)`` and the rectifier ``r_t`` of
    [`rectification`][rangerlab.transforms.rectification]:

    $$
    w \\leftarrow w - \\text{lr}\\cdot\\begin{cases}
    \\hat m_t & \\rho_t \\le 5 \\text{ (first steps: bias-corrected momentum)}\\\\
    r_t\\, \\hat m_t\\, \\sqrt{1-\\beta_2^t} / (\\sqrt{v_t}+\\epsilon) & \\text{otherwise}
    \\end{cases}
    $$

    The rectifier replaces a hand-tuned warmup. Weight decay as in [`Adam`][rangerlab.Adam].

    Args:
        params: parameters or param groups.
        lr: learning rate.
        betas: ``(beta1, beta2)``.
        eps: added to ``sqrt(v_t)``.
        weight_decay: ``lambda``.
        decoupled_weight_decay: decoupled decay (``w <- w - lr*lambda*w``) instead of L2.
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
        >>> RAdam([w], lr=0.1).step()  # step 1: rho_1 <= 5, so w -= lr * m_hat = lr * g
        >>> w.detach()
        tensor([0.8000])

    References:
        Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020.
        arXiv:1908.03265.
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
        super().__init__(params, radam_chain, **settings(locals()))
