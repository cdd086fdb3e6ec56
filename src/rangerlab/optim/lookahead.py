"""Lookahead around any torch optimizer."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from .. import telemetry
from .._ops import pick_ops
from .._validation import check_group, unique_params
from ..transforms.lookahead import COUNTER, LookaheadTransform, distances, sync_, sync_due
from . import _state
from ._inner import step_inner
from .chain import Chain, _buckets

SLOW = "slow_param"
#: The chain's Lookahead link keeps the counter here too, so both count steps the same way.
_COUNTING = LookaheadTransform()


class Lookahead(Optimizer):
    """Lookahead wrapped around any ``torch.optim.Optimizer`` (torch's fused AdamW included).

    The wrapped optimizer updates the fast weights ``theta``. Slow weights ``phi`` start as a copy
    of each parameter taken at the first ``step()``, before that step's update
    (``phi_0 = theta_0``). After every ``k``-th step:

    $$
    \\phi \\leftarrow \\phi + \\alpha(\\theta - \\phi),\\qquad \\theta \\leftarrow \\phi
    $$

    One step counter per optimizer (kept in every param group as ``lookahead_step``). The wrapper
    shares the wrapped optimizer's ``param_groups``, so LR schedulers and ``GradScaler`` drive it
    directly; ``k`` and ``alpha`` are per-group settings. ``state_dict()`` is the wrapped
    optimizer's, with each parameter's slow weights added as ``slow_param`` (and any entries of
    `state` not keyed by a parameter, as torch keeps them).

    As one optimizer: global step hooks fire once per ``step()``; a step the wrapped optimizer
    skips (``last_step_skipped``, or inf/NaN under GradScaler's in-step unscaling, which is
    forwarded where the wrapped optimizer supports it) moves no counter and sets
    `last_step_skipped`; a step with no gradients at all changes nothing.

    Args:
        optimizer: the optimizer to wrap.
        k: synchronisation period (a positive int).
        alpha: slow step size, in (0, 1].
        telemetry: record ``||fast - slow||`` at each sync, and turn on the wrapped rangerlab
            optimizer's telemetry (for another optimizer: ``||w||``, ``||g||`` and the step's
            ``||Δw||``, measured around its step); read with `telemetry`. An int ``N``
            records on every ``N``-th step (see `rangerlab.telemetry`).

    Examples:
        The paper's path on ``f(x) = x`` with ``SGD(lr=1)``, ``k=3``, ``alpha=0.5``, from
        ``x = 3``: 2, 1, 0 (sync to 1.5), 0.5, -0.5, -1.5 (sync to 0).

        >>> import torch
        >>> x = torch.nn.Parameter(torch.tensor(3.0))
        >>> opt = Lookahead(torch.optim.SGD([x], lr=1.0), k=3, alpha=0.5)
        >>> path = []
        >>> for _ in range(6):
        ...     opt.zero_grad()
        ...     x.backward()  # f(x) = x: the gradient is 1
        ...     _ = opt.step()
        ...     path.append(x.item())
        >>> path
        [2.0, 1.0, 1.5, 0.5, -0.5, 0.0]

    References:
        Zhang, Lucas, Hinton, Ba. "Lookahead Optimizer: k steps forward, 1 step back",
        NeurIPS 2019. arXiv:1907.08610.
    """

    def __init__(
        self, optimizer: Optimizer, k: int = 6, alpha: float = 0.5, *, telemetry: bool | int = False
    ):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"Lookahead wraps a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        if any(COUNTER in group for group in optimizer.param_groups):
            raise ValueError(
                f"{type(optimizer).__name__} already applies Lookahead (its param groups carry "
                f"{COUNTER!r}); wrapping it again would share its counter and slow weights"
            )
        check_group({"k": k, "alpha": alpha, "telemetry": telemetry})
        self.optimizer = optimizer
        #: True when the last ``step()`` changed nothing because the wrapped optimizer skipped it
        #: (``skip_nonfinite=True`` inside, or inf/NaN found under a forwarded GradScaler).
        self.last_step_skipped = False
        self._initialized = False
        defaults = {"k": k, "alpha": alpha}
        if telemetry:  # telemetry hook: the shared groups turn it on in the wrapped optimizer too
            for group in optimizer.param_groups:
                check_group({**group, "telemetry": telemetry})
                group["telemetry"] = telemetry
            defaults["telemetry"] = telemetry
        super().__init__(list(optimizer.param_groups), defaults)
        self._initialized = True

    # The wrapped optimizer's groups *are* this optimizer's groups.
    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, groups: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups = groups

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the wrapped optimizer too; it joins the shared step counter.

        Raises ``ValueError`` for an invalid ``k`` or ``alpha``, or a tensor listed twice.
        """
        check_group(param_group)
        if self._initialized:
            param_group["params"] = unique_params(param_group, len(self.param_groups))
            self.optimizer.add_param_group(param_group)
        else:
            super().add_param_group(param_group)
        group = self.param_groups[-1]
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        _COUNTING.init_group(group, self.param_groups[:-1])

    # -- the step -------------------------------------------------------------------------------

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Step the wrapped optimizer, then synchronise the groups whose k divides the counter."""
        fresh = [
            p
            for group in self.param_groups
            for p in group["params"]
            if SLOW not in self.state.get(p, {})
            and (p.grad is not None or (closure is not None and p.requires_grad))
        ]
        with torch.no_grad():
            snapshots = [p.detach().to(_state.state_dtype(p), copy=True) for p in fresh]
        measure = None
        if telemetry.enabled(self) and not isinstance(self.optimizer, Chain):  # telemetry hook
            telemetry.tick(self)
            measure = telemetry.ForeignStep(self)
        loss, self.last_step_skipped = self._step_inner(closure)
        if measure is not None:
            measure.finish(self.last_step_skipped)
        if self.last_step_skipped:
            return loss  # the wrapped optimizer changed nothing, so neither does Lookahead
        if not any(p.grad is not None for group in self.param_groups for p in group["params"]):
            return loss  # nothing was updated, so no counter moves (as in the presets)
        with torch.no_grad():
            for p, slow in zip(fresh, snapshots):
                if p.grad is not None:
                    self.state[p][SLOW] = slow
            for group in self.param_groups:
                _COUNTING.begin_step(group)
                if sync_due(group):
                    self._sync(group)
        return loss

    def _step_inner(self, closure: Callable[[], Any] | None) -> tuple[Any, bool]:
        """Step the wrapped optimizer (forwarding GradScaler's arguments); say if it skipped."""
        found_inf = getattr(self, "found_inf", None)
        forwarded = self._step_supports_amp_scaling and hasattr(self, "grad_scale")
        if forwarded:
            self.optimizer.grad_scale, self.optimizer.found_inf = self.grad_scale, found_inf
        try:
            loss = step_inner(self.optimizer, closure)
        finally:
            if forwarded:
                del self.optimizer.grad_scale, self.optimizer.found_inf
        skipped = bool(getattr(self.optimizer, "last_step_skipped", False))
        if forwarded and found_inf is not None:
            # The wrapped optimizer skipped on the device; the counter lives on the host, so this
            # costs the one synchronisation GradScaler itself makes for other optimizers.
            skipped = skipped or bool(found_inf.item())
        return loss, skipped

    @property
    def _step_supports_amp_scaling(self) -> bool:  # type: ignore[override]
        """GradScaler's contract (unscale and skip inside ``step``), as the wrapped optimizer."""
        return bool(getattr(self.optimizer, "_step_supports_amp_scaling", False))

    def _sync(self, group: dict[str, Any]) -> None:
        params = [
            p for p in group["params"] if p.grad is not None and SLOW in self.state.get(p, {})
        ]
        names = {}
        counter = self.optimizer if isinstance(self.optimizer, Chain) else self
        if telemetry.due(counter, group):  # telemetry hook
            index = next(i for i, g in enumerate(self.param_groups) if g is group)
            names = dict(zip(map(id, group["params"]), telemetry.param_names(self, index)))
        for bucket in _buckets(params):
            slow = [self.state[p][SLOW] for p in bucket]
            if bucket[0].is_complex():  # as its view_as_real, like every complex parameter
                bucket = [torch.view_as_real(p.detach()) for p in bucket]
                slow = [torch.view_as_real(s) for s in slow]
            ops = pick_ops(group.get("foreach"), bucket)
            same = bucket[0].dtype == slow[0].dtype
            fast = bucket if same else [p.detach().to(slow[0].dtype) for p in bucket]
            if names:
                telemetry.recorder(self).add(
                    "lookahead_distance", [names[id(p)] for p in bucket], distances(fast, slow)
                )
            sync_(ops, fast, slow, group["alpha"])
            if not same:
                ops.copy_(bucket, fast)

    def telemetry(self, reset: bool = True) -> dict[str, float]:
        """Telemetry since the last read: the sync distances and the wrapped optimizer's."""
        out = telemetry.read(self, reset)
        if isinstance(self.optimizer, Chain):
            out.update(self.optimizer.telemetry(reset))
        return out

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    # -- state ----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The wrapped optimizer's state dict plus the slow weights (``slow_param``)."""

        def build() -> dict[str, Any]:
            inner = self.optimizer.state_dict()
            state = {
                key: dict(value) if isinstance(value, Mapping) else value
                for key, value in inner["state"].items()
            }
            for index, p in enumerate(_state.param_index(self.param_groups)):
                if SLOW in self.state.get(p, {}):
                    state.setdefault(index, {})[SLOW] = self.state[p][SLOW]
            # Entries not keyed by a parameter (what a state_dict pre-hook stashes): torch
            # keeps them as they are.
            state.update((k, v) for k, v in self.state.items() if not isinstance(k, Tensor))
            return {**inner, "state": state}

        return _state.run_state_dict_hooks(self, build)

    def consolidate_state_dict(self, to: int = 0) -> None:
        """Gather a wrapped ZeroRedundancyOptimizer's state on rank ``to``, for ``state_dict()``.

        The slow weights need no gathering: every rank keeps them for all parameters.
        """
        consolidate = getattr(self.optimizer, "consolidate_state_dict", None)
        if consolidate is None:
            raise TypeError(
                f"consolidate_state_dict: the wrapped {type(self.optimizer).__name__} has no "
                "sharded state to gather (it is for ZeroRedundancyOptimizer)"
            )
        consolidate(to=to)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a ``state_dict()``; a state dict that does not fit raises and changes nothing."""
        state_dict = dict(state_dict)
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        _state.check_state_dict(self, state_dict, shaped_keys=(SLOW,))
        ids = _state.saved_params(state_dict, self.param_groups)
        slow, inner_state, other = {}, {}, {}
        for key, entry in state_dict["state"].items():
            if key not in ids:  # not a parameter's: kept as is, by the wrapper and the wrapped
                other[key] = inner_state[key] = entry
                continue
            entry = dict(entry)
            if SLOW in entry:
                slow[key] = entry.pop(SLOW)
            if entry:
                inner_state[key] = entry
        self.optimizer.load_state_dict({**state_dict, "state": inner_state})
        self.state.clear()
        self.state.update(other)
        for saved_id, p in ids.items():
            if saved_id in slow:
                self.state[p] = _state.cast_state(p, {SLOW: slow[saved_id]})
        for hook in self._optimizer_load_state_dict_post_hooks.values():
            hook(self)

    def slow_weights(self) -> AbstractContextManager[None]:
        """Context manager: evaluate on the slow weights; the fast weights come back after."""
        return _state.swapped_in(
            [
                (p, self.state[p][SLOW])
                for g in self.param_groups
                for p in g["params"]
                if SLOW in self.state.get(p, {})
            ]
        )

    def __getstate__(self) -> dict[str, Any]:
        return {
            "defaults": self.defaults,
            "state": self.state,
            "optimizer": self.optimizer,
            "last_step_skipped": self.last_step_skipped,
            "_initialized": True,
        }

    def __repr__(self) -> str:
        return (
            f"Lookahead({self.optimizer!r}, k={self.defaults['k']}, alpha={self.defaults['alpha']})"
        )
