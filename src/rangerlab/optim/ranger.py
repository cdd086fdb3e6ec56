"""Ranger and Ranger-LARS: RAdam (+ the LAMB trust ratio) under Lookahead, with GC."""

from __future__ import annotations

from collections.abc import Iterable

from ..transforms import lookahead, scale_by_trust_ratio
from .chain import Chain, settings
from .radam import radam_chain


def ranger_chain(group: dict) -> list:
    """``radam_chain`` with decoupled decay, then ``lookahead``."""
    return [*radam_chain({**group, "decoupled_weight_decay": True}), lookahead()]


def ranger_lars_chain(group: dict) -> list:
    """``radam_chain`` with decoupled decay, ``scale_by_trust_ratio``, then ``lookahead``."""
    return [
        *radam_chain({**group, "decoupled_weight_decay": True}),
        scale_by_trust_ratio(),
        lookahead(),
    ]


class Ranger(Chain):
    """Ranger = Lookahead(RAdam with decoupled weight decay and Gradient Centralization).

    ``Ranger(p, lr, betas, eps, weight_decay, k, alpha, gc)`` follows exactly the trajectory of
    ``Lookahead(RAdam(p, lr, betas, eps, weight_decay, decoupled_weight_decay=True, gc=gc), k,
    alpha)``: [`RAdam`][rangerlab.RAdam] steps on the fast weights ``theta`` and, after every
    ``k``-th step, the slow weights ``phi`` (a copy of the weights at the first step) move:

    $$
    \\phi \\leftarrow \\phi + \\alpha(\\theta - \\phi),\\qquad \\theta \\leftarrow \\phi
    $$

    The chain is ``[centralize(), scale_by_radam(), add_decayed_weights(), lookahead()]``.
    ``with opt.slow_weights(): ...`` evaluates on the slow weights.

    Args:
        params: parameters or param groups.
        lr: learning rate.
        betas: RAdam's ``(beta1, beta2)``; Ranger's default beta1 is 0.95.
        eps: RAdam's epsilon.
        weight_decay: decoupled weight decay.
        k: Lookahead's synchronisation period.
        alpha: Lookahead's slow step size.
        gc: Gradient Centralization (on by default, as in Ranger 20.9).
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
        >>> opt = Ranger([w], lr=0.1, k=1, alpha=0.5)
        >>> opt.step()  # to 0.8, then halfway back
        >>> w.detach()
        tensor([0.9000])

    References:
        Wright, Ranger (github.com/lessw2020/Ranger-Deep-Learning-Optimizer), 2019;
        Liu et al. ICLR 2020 (RAdam); Zhang et al. NeurIPS 2019 (Lookahead); Yong et al. ECCV 2020
        (GC).
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.95, 0.999),
        eps: float = 1e-5,
        weight_decay: float = 0.0,
        k: int = 6,
        alpha: float = 0.5,
        gc: bool = True,
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
        master_weights: bool = False,
        skip_nonfinite: bool = False,
        telemetry: bool | int = False,
    ):
        super().__init__(params, ranger_chain, **settings(locals()))


class RangerLARS(Chain):
    """Ranger-LARS ("Over9000"): Ranger with the LAMB trust ratio on RAdam's direction.

    Per tensor, with RAdam's direction ``u`` (its displacement over lr, no decay):

    $$
    u \\leftarrow u + \\lambda w,\\quad
    r = \\frac{\\min(\\|w\\|, c)}{\\|u\\|},\\quad
    w \\leftarrow w - \\text{lr}\\, r\\, u
    $$

    with ``c = max_weight_norm`` (no cap when it is None; ``r`` is 1 where either norm is 0),
    after Gradient Centralization and under Lookahead(k, alpha) as in
    [`Ranger`][rangerlab.Ranger]. Unlike the over9000 original, ``r`` divides by the norm of the
    update, not of the updated weights (which made its ratio about 1). The chain is
    ``[centralize(), scale_by_radam(), add_decayed_weights(), scale_by_trust_ratio(),
    lookahead()]``.

    Args:
        params: parameters or param groups.
        lr: learning rate.
        betas: RAdam's ``(beta1, beta2)``; the default beta1 is 0.95, as in Ranger.
        eps: RAdam's epsilon.
        weight_decay: ``lambda``, added to RAdam's direction before the trust ratio.
        k: Lookahead's synchronisation period.
        alpha: Lookahead's slow step size.
        gc: Gradient Centralization (on by default).
        max_weight_norm: cap on ``||w||`` in the ratio (None: no cap).
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
        >>> RangerLARS([w], lr=0.1, k=1, alpha=1.0).step()  # ||w||=5, so a step of lr*5 along -g
        >>> w.detach()
        tensor([2.5000, 4.0000])

    References:
        You et al. ICLR 2020 (LAMB, arXiv:1904.00962); Grankin, over9000
        (github.com/mgrankin/over9000), 2019; and the references of [`Ranger`][rangerlab.Ranger].
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.95, 0.999),
        eps: float = 1e-5,
        weight_decay: float = 0.0,
        k: int = 6,
        alpha: float = 0.5,
        gc: bool = True,
        max_weight_norm: float | None = 10.0,
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
        master_weights: bool = False,
        skip_nonfinite: bool = False,
        telemetry: bool | int = False,
    ):
        super().__init__(params, ranger_lars_chain, **settings(locals()), trust_ratio=True)
