"""Which chains have a fused kernel, and how a kernel call is assembled from a param group.

A chain maps to a kernel by the types of its links: an optional leading ``Centralize``, a core
that one kernel family computes, an optional trailing ``LookaheadTransform``. Only exact types
match, so a user's subclass of a transform keeps the reference path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..transforms.adam import ScaleByAdam
from ..transforms.centralize import Centralize
from ..transforms.lookahead import LookaheadTransform, sync_due
from ..transforms.momentum import Momentum
from ..transforms.radam import ScaleByRAdam, rectification
from ..transforms.trust_ratio import ScaleByLARS, ScaleByTrustRatio
from ..transforms.weight_decay import AddDecayedWeights
from . import _build


@dataclass(frozen=True)
class FusedKernel:
    """One fused kernel call per bucket, configured by what the chain is.

    Attributes:
        family: ``"adam"`` (Adam/AdamW, RAdam, Ranger, Ranger-LARS, LAMB) or ``"sgd"`` (SGD, LARS).
        radam: RAdam's rectified direction instead of Adam's (adam family).
        decay: where weight decay enters: ``"coupled"`` (added to g), ``"decoupled"`` (added to
            the direction), or None (the chain has no decay).
        trust: the LAMB trust ratio (adam family) or the LARS ratio (sgd family).
        momentum: the chain has a ``Momentum`` link (sgd family).
        centralize: the chain starts with ``Centralize``.
        lookahead: the chain ends with ``LookaheadTransform``.
    """

    family: str
    radam: bool = False
    decay: str | None = None
    trust: bool = False
    momentum: bool = False
    centralize: bool = False
    lookahead: bool = False

    def __call__(
        self,
        group: dict[str, Any],
        weights: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
        steps: list[int],
    ) -> None:
        """Update ``weights`` (and the state) in place for one bucket, as the chain would."""
        grads = [
            g.to(w.dtype).contiguous() if g.dtype != w.dtype else g.contiguous()
            for g, w in zip(grads, weights, strict=True)
        ]
        gc = self.centralize and bool(group["gc"])
        # LARS adds the decay itself; the LAMB ratio does not.
        decays = self.decay is not None or (self.family == "sgd" and self.trust)
        weight_decay = float(group["weight_decay"]) if decays else 0.0
        ops = _build.load()
        if self.family == "sgd":
            self._sgd(ops, group, weights, grads, states, gc, weight_decay)
        else:
            self._adam(ops, group, weights, grads, states, steps, gc, weight_decay)

    def _adam(self, ops, group, weights, grads, states, steps, gc, weight_decay) -> None:
        beta1, beta2 = group["betas"]
        per_step = {t: self._step_constants(t, beta1, beta2) for t in set(steps)}
        rows = [per_step[t] for t in steps]
        a, d, adaptive = ([row[i] for row in rows] for i in range(3))
        sync = self.lookahead and sync_due(group)
        trust = self.trust and bool(group["trust_ratio"])
        cap = group["max_weight_norm"] if trust else None
        ops.adam_step(
            weights,
            grads,
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [s["slow_param"] for s in states] if sync else [],
            a,
            d,
            adaptive,
            float(group["lr"]),
            float(beta1),
            float(beta2),
            float(group["eps"]),
            weight_decay,
            self.decay == "decoupled",
            gc,
            trust,
            -1.0 if cap is None else float(cap),
            sync,
            float(group["alpha"]) if sync else 0.0,
        )

    def _step_constants(self, t: int, beta1: float, beta2: float) -> tuple[float, float, int]:
        """Step ``t``'s constants ``(a, d, adaptive)`` for the kernel.

        The direction is ``a*m/(sqrt(v)/d + eps)``, or ``a*m`` while RAdam is not yet adaptive.
        """
        bias1 = 1.0 - beta1**t
        if not self.radam:
            return 1.0 / bias1, math.sqrt(1.0 - beta2**t), 1
        r = rectification(t, beta2)
        if r is None:
            return 1.0 / bias1, 1.0, 0
        return r * math.sqrt(1.0 - beta2**t) / bias1, 1.0, 1

    def _sgd(self, ops, group, weights, grads, states, gc, weight_decay) -> None:
        momentum = float(group["momentum"]) if self.momentum else 0.0
        fresh = []
        if momentum != 0:
            for w, s in zip(weights, states, strict=True):
                fresh.append(int("momentum_buffer" not in s))
                if fresh[-1]:
                    s["momentum_buffer"] = torch.empty_like(w)
        trust = self.trust and bool(group["trust_ratio"])
        ops.sgd_step(
            weights,
            grads,
            [s["momentum_buffer"] for s in states] if momentum != 0 else [],
            fresh,
            float(group["lr"]),
            momentum,
            float(group["dampening"]) if momentum else 0.0,
            weight_decay,
            bool(group["nesterov"]) if momentum else False,
            gc,
            trust,
            float(group["trust_coefficient"]) if trust else 0.0,
            float(group["eps"]) if trust else 0.0,
            bool(group["clip"]) if trust else False,
        )


def _adam_cores(direction: type, radam: bool) -> dict[tuple, FusedKernel]:
    return {
        (direction,): FusedKernel("adam", radam=radam),
        (AddDecayedWeights, direction): FusedKernel("adam", radam=radam, decay="coupled"),
        (direction, AddDecayedWeights): FusedKernel("adam", radam=radam, decay="decoupled"),
        (direction, ScaleByTrustRatio): FusedKernel("adam", radam=radam, trust=True),
        (direction, AddDecayedWeights, ScaleByTrustRatio): FusedKernel(
            "adam", radam=radam, decay="decoupled", trust=True
        ),
    }


#: Chain cores (without a leading Centralize or a trailing Lookahead) that have a kernel.
CORES: dict[tuple, FusedKernel] = {
    **_adam_cores(ScaleByAdam, radam=False),
    **_adam_cores(ScaleByRAdam, radam=True),
    (AddDecayedWeights,): FusedKernel("sgd", decay="coupled"),
    (AddDecayedWeights, Momentum): FusedKernel("sgd", decay="coupled", momentum=True),
    (Momentum,): FusedKernel("sgd", momentum=True),
    (ScaleByLARS,): FusedKernel("sgd", trust=True),
    (ScaleByLARS, Momentum): FusedKernel("sgd", trust=True, momentum=True),
}


def kernel_for(transforms: Sequence) -> FusedKernel | None:
    """The fused kernel that computes ``transforms`` exactly, or None if there is none."""
    types = [type(t) for t in transforms]
    centralize = bool(types) and types[0] is Centralize
    lookahead = bool(types) and types[-1] is LookaheadTransform
    core = tuple(types[int(centralize) : len(types) - int(lookahead)])
    kernel = CORES.get(core)
    if kernel is None:
        return None
    return FusedKernel(
        kernel.family,
        kernel.radam,
        kernel.decay,
        kernel.trust,
        kernel.momentum,
        centralize,
        lookahead,
    )
