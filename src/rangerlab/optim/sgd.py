"""SGD with momentum, as a chain."""

from __future__ import annotations

from collections.abc import Iterable

from ..transforms import add_decayed_weights, centralize, momentum
from .chain import Chain, settings


def sgd_chain(group: dict) -> list:
    """``centralize -> add_decayed_weights -> momentum`` (torch.optim.SGD's order)."""
    return [centralize(), add_decayed_weights(), momentum()]


class SGD(Chain):
    """Stochastic gradient descent with (Nesterov) momentum; torch.optim.SGD's trajectory.

    $$
    d = g + \\lambda w,\\quad v_1 = d,\\quad v_t = \\mu v_{t-1} + (1-\\tau) d,\\quad
    w \\leftarrow w - \\text{lr}\\,(v_t \\text{ or, with nesterov, } d + \\mu v_t)
    $$

    With ``gc=True``, ``g`` is first centralized
    ([`centralized`][rangerlab.transforms.centralized]). The chain is
    ``[centralize(), add_decayed_weights(), momentum()]``.

    Args:
        params: parameters or param groups.
        lr: learning rate (torch.optim.SGD's default, 1e-3).
        momentum: ``mu``; 0 disables momentum.
        dampening: ``tau``.
        weight_decay: ``lambda`` (L2, added to the gradient).
        nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
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
        >>> SGD([w], lr=0.1).step()
        >>> w.detach()
        tensor([0.8000])

    References:
        Robbins, Monro 1951; Sutskever et al., ICML 2013 (momentum); torch.optim.SGD.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        gc: bool = False,
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
        master_weights: bool = False,
        skip_nonfinite: bool = False,
        telemetry: bool | int = False,
    ):
        super().__init__(params, sgd_chain, **settings(locals()))
