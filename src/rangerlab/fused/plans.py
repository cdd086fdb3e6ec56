"""Which chains have a fused kernel, and how a kernel call is assembled from a param group.

A chain maps to a kernel by the types of its links: an optional leading ``Centralize``, a core
that one kernel family computes, an optional trailing ``LookaheadTransform``. Only exact types
match, so a user's subclass of a transform keeps the reference path, and so does a link that
declares a group setting the kernels do not read (`UNDERSTOOD`).

The kernels do element-wise work and reductions only. Every per-step scalar and rule comes from
the transforms, the same functions the reference path calls: ``adam_scalars`` (in
``transforms/adam.py``), ``radam_scalars``, ``lars_ratio`` and ``lamb_ratio`` (in
``transforms/trust_ratio.py``), momentum's ``first_step`` and Lookahead's ``sync_due``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..transforms.adam import ScaleByAdam, adam_scalars
from ..transforms.centralize import Centralize
from ..transforms.lookahead import LookaheadTransform, sync_due
from ..transforms.momentum import Momentum, first_step
from ..transforms.radam import ScaleByRAdam, radam_scalars
from ..transforms.trust_ratio import ScaleByLARS, ScaleByTrustRatio, lamb_ratio, lars_ratio
from ..transforms.weight_decay import AddDecayedWeights
from . import _build
from .stats import RATIO, U_SQ

#: The group settings the kernels read for each link type. A link declaring anything else
#: (a subclass or an instance with more hyperparameters) has no kernel.
UNDERSTOOD: dict[type, frozenset[str]] = {
    Centralize: frozenset({"gc"}),
    ScaleByAdam: frozenset({"betas", "eps"}),
    ScaleByRAdam: frozenset({"betas", "eps"}),
    AddDecayedWeights: frozenset({"weight_decay"}),
    ScaleByTrustRatio: frozenset({"max_weight_norm", "trust_ratio"}),
    ScaleByLARS: frozenset({"trust_coefficient", "eps", "clip", "trust_ratio", "weight_decay"}),
    Momentum: frozenset({"momentum", "dampening", "nesterov"}),
    LookaheadTransform: frozenset({"k", "alpha"}),
}

#: Sums squared norms over the ranks that hold shards of the same tensors (FSDP2), in place.
NormReducer = Callable[[Tensor], None]


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

    #: The kernels fill a telemetry stats tensor in their own passes (`rangerlab.fused.stats`).
    records: ClassVar[bool] = True

    # -- what every path shares: the settings and per-step scalars, from their owners ----------

    def scalars(self, step, beta1: float, beta2: float):
        """``(a, d, adaptive)`` of the direction ``a * m / (sqrt(v) / d + eps)`` at ``step``."""
        owner = radam_scalars if self.radam else adam_scalars
        return owner(step, beta1, beta2)

    def weight_decay(self, group: dict[str, Any]) -> float:
        """The decay the kernel applies (LARS adds it itself; the LAMB ratio does not)."""
        decays = self.decay is not None or (self.family == "sgd" and self.trust)
        return float(group["weight_decay"]) if decays else 0.0

    def gc(self, group: dict[str, Any]) -> bool:
        """Gradient Centralization is on for this group."""
        return self.centralize and bool(group["gc"])

    def uses_trust(self, group: dict[str, Any]) -> bool:
        """This group computes a trust ratio (two passes)."""
        return self.trust and bool(group["trust_ratio"])

    def ratios(self, group: dict[str, Any], sq_norms: Tensor) -> Tensor:
        """Per-tensor trust ratios from squared norms ``(n, 2)``: weights, then g or u."""
        norms = sq_norms.sqrt()
        owner = lars_ratio if self.family == "sgd" else lamb_ratio
        return owner(norms[:, 0], norms[:, 1], group)

    def sync(self, group: dict[str, Any]):
        """The Lookahead sync decision for this step (False without Lookahead)."""
        return self.lookahead and sync_due(group)

    # -- the CPU kernels --------------------------------------------------------------------

    def __call__(
        self,
        group: dict[str, Any],
        weights: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
        steps: list[int],
        reduce_norms: NormReducer | None = None,
        stats: Tensor | None = None,
    ) -> None:
        """Update ``weights`` (and the state) in place for one bucket, as the chain would.

        ``reduce_norms`` sums the squared norms of sharded tensors over the ranks (one call per
        bucket) before the trust ratios are taken from them. ``stats`` (telemetry: a zeroed
        ``(n, 9)`` float64 tensor from `rangerlab.fused.stats.new_stats`) is filled in the same
        passes; the update is then bit-identical to one without it.
        """
        grads = [
            g.to(w.dtype).contiguous() if g.dtype != w.dtype else g.contiguous()
            for g, w in zip(grads, weights, strict=True)
        ]
        ops = _build.load()
        if self.family == "sgd":
            self._sgd(ops, group, weights, grads, states, reduce_norms, stats)
        else:
            self._adam(ops, group, weights, grads, states, steps, reduce_norms, stats)

    def _trust_ratios(self, group, sq_norms: Tensor, reduce_norms) -> list[float]:
        if reduce_norms is not None:
            reduce_norms(sq_norms)
        # A few tensors per batch: the rule on Python numbers costs less than torch ops would.
        owner = lars_ratio if self.family == "sgd" else lamb_ratio
        return [owner(math.sqrt(w), math.sqrt(x), group) for w, x in sq_norms.tolist()]

    def _adam(self, ops, group, weights, grads, states, steps, reduce_norms, stats) -> None:
        beta1, beta2 = group["betas"]
        per_step = {t: self.scalars(t, beta1, beta2) for t in set(steps)}
        a, d, adaptive = ([per_step[t][i] for t in steps] for i in range(3))
        adaptive = [int(x) for x in adaptive]
        sync = bool(self.sync(group))
        alpha = float(group["alpha"]) if sync else 0.0
        slows = [s["slow_param"] for s in states] if sync else []
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        lr, eps, decoupled = float(group["lr"]), float(group["eps"]), self.decay == "decoupled"
        weight_decay, gc = self.weight_decay(group), self.gc(group)
        if not self.uses_trust(group):
            ops.adam_step(
                weights, grads, exp_avgs, exp_avg_sqs, slows, a, d, adaptive,
                lr, float(beta1), float(beta2), eps, weight_decay, decoupled, gc, sync, alpha,
                stats,
            )  # fmt: skip
            return
        applied: list[float] = []
        for b in _batches(weights, reduce_norms):
            rows = None if stats is None else stats[b]
            sq_norms = ops.adam_trust_norms(
                weights[b], grads[b], exp_avgs[b], exp_avg_sqs[b], a[b], d[b], adaptive[b],
                float(beta1), float(beta2), eps, weight_decay, decoupled, gc, rows,
            )  # fmt: skip
            ratios = self._trust_ratios(group, sq_norms, reduce_norms)
            ops.adam_trust_apply(
                weights[b], exp_avgs[b], exp_avg_sqs[b], slows[b], a[b], d[b], adaptive[b],
                ratios, lr, eps, weight_decay, decoupled, sync, alpha, rows,
            )  # fmt: skip
            applied.extend(ratios)
        if stats is not None:  # the kernel summed the direction before the ratio scaled it
            ratio = torch.tensor(applied, dtype=torch.float64)
            stats[:, RATIO] = ratio
            stats[:, U_SQ] *= ratio.square()

    def _sgd(self, ops, group, weights, grads, states, reduce_norms, stats) -> None:
        momentum = float(group["momentum"]) if self.momentum else 0.0
        fresh = []
        if momentum != 0:
            for w, s in zip(weights, states, strict=True):
                fresh.append(int(first_step(s)))
                if fresh[-1]:
                    s["momentum_buffer"] = torch.empty_like(w)
        gc, trust = self.gc(group), self.uses_trust(group)
        bufs = [s["momentum_buffer"] for s in states] if momentum != 0 else []
        applied: list[float] = []
        for b in _batches(weights, reduce_norms) if trust else [slice(None)]:
            ratios = []
            if trust:
                sq_norms = ops.sgd_trust_norms(weights[b], grads[b], gc)
                ratios = self._trust_ratios(group, sq_norms, reduce_norms)
            rows = None if stats is None else stats[b]
            applied.extend(ratios)
            ops.sgd_step(
                weights[b],
                grads[b],
                bufs[b],
                fresh[b],
                ratios,
                float(group["lr"]),
                momentum,
                float(group["dampening"]) if momentum else 0.0,
                self.weight_decay(group),
                bool(group["nesterov"]) if momentum else False,
                gc,
                rows,
            )
        if stats is not None and applied:  # the ratios the step applied, for telemetry
            stats[:, RATIO] = torch.tensor(applied, dtype=torch.float64)


#: Elements of whole tensors per two-pass batch on the CPU: the second pass then finds what the
#: first one read still in cache.
BATCH = 1 << 19


def _batches(weights: list[Tensor], reduce_norms: NormReducer | None) -> list[slice]:
    """Slices of whole tensors of about `BATCH` elements (one slice when the norms are
    summed over ranks: one collective per bucket)."""
    if reduce_norms is not None:
        return [slice(None)]
    out, start, size = [], 0, 0
    for i, w in enumerate(weights):
        size += w.numel()
        if size >= BATCH:
            out.append(slice(start, i + 1))
            start, size = i + 1, 0
    if start < len(weights):
        out.append(slice(start, None))
    return out


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
    for t in transforms:
        if not set(t.hyperparams) <= UNDERSTOOD.get(type(t), frozenset()):
            return None
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
