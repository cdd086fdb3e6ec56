"""LARS / LARC, as a chain."""

from __future__ import annotations

from collections.abc import Iterable

from ..transforms import centralize, momentum, scale_by_lars
from .chain import Chain, settings


def lars_chain(group: dict) -> list:
    """``centralize -> scale_by_lars -> momentum``."""
    return [centralize(), scale_by_lars(), momentum()]


class LARS(Chain):
    """Layer-wise Adaptive Rate Scaling over SGD momentum (LARC with ``clip=True``).

    Per tensor (in a group whose ``trust_ratio`` is true, the default):

    $$
    \\text{trust} = \\eta\\frac{\\|w\\|}{\\|g\\|+\\lambda\\|w\\|+\\epsilon},\\quad
    d = \\text{trust}\\,(g + \\lambda w),\\quad v_1 = d,\\quad
    v_t = \\mu v_{t-1} + (1-\\tau) d,\\quad w \\leftarrow w - \\text{lr}\\, v_t
    $$

    ``trust`` is 1 where ``||w||`` or ``||g||`` is 0; ``clip`` makes it ``min(trust/lr, 1)``;
    ``nesterov`` uses ``d + mu*v_t``. Without ``trust_ratio`` the trust factor is dropped (the
    SimCLR convention for biases and norm weights, see
    [`create_optimizer`][rangerlab.create_optimizer]). The chain is
    ``[centralize(), scale_by_lars(), momentum()]``.

    Args:
        params: parameters or param groups.
        lr: learning rate (default 1.0, the scale of the LARS paper: the trust ratio, with its
            small ``trust_coefficient``, sets each layer's step).
        momentum: ``mu``.
        dampening: ``tau``.
        weight_decay: ``lambda``.
        nesterov: Nesterov momentum.
        trust_coefficient: ``eta``.
        eps: added to the trust ratio's denominator.
        clip: LARC clipping.
        gc: Gradient Centralization (``g`` is the centralized gradient).
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
        >>> w.grad = torch.tensor([0.0, 1.0])
        >>> LARS([w], lr=1.0, momentum=0.0, trust_coefficient=0.1).step()  # trust=.1*5/1
        >>> w.detach()
        tensor([3.0000, 3.5000])

    References:
        You, Gitman, Ginsburg. "Large Batch Training of Convolutional Networks", 2017.
        arXiv:1708.03888.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1.0,
        momentum: float = 0.9,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        trust_coefficient: float = 0.001,
        eps: float = 1e-8,
        clip: bool = False,
        gc: bool = False,
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
        master_weights: bool = False,
        skip_nonfinite: bool = False,
        telemetry: bool | int = False,
    ):
        super().__init__(params, lars_chain, **settings(locals()), trust_ratio=True)
