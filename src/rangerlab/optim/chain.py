"""The optimizer adapter: runs a chain of transforms as a ``torch.optim.Optimizer``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from .. import fused, telemetry
from .._ops import foreach_supported, pick_ops
from .._validation import check_group, unique_params
from .._warnings import warn
from ..transforms.base import Context, Transform
from . import _state

ChainSpec = Sequence[Transform] | Callable[[dict], Sequence[Transform]]

#: Settings every chain understands, beside what its transforms declare.
COMMON_DEFAULTS: dict[str, Any] = {
    "lr": 1e-3,
    "foreach": None,
    "fused": None,
    "master_weights": False,
    "skip_nonfinite": False,
    "telemetry": False,
}


def settings(arguments: dict[str, Any]) -> dict[str, Any]:
    """A preset constructor's arguments (its ``locals()``) as param-group defaults."""
    return {k: v for k, v in arguments.items() if k not in ("self", "params", "__class__")}


def declared_hyperparams(transforms: Sequence[Transform]) -> dict[str, Any]:
    """The group keys a chain reads, with defaults (the first transform to declare a key wins)."""
    out: dict[str, Any] = {}
    for t in transforms:
        for key, value in t.hyperparams.items():
            out.setdefault(key, value)
    return out


def _check_transforms(transforms: Sequence[Transform]) -> None:
    owner: dict[str, Transform] = {}
    for t in transforms:
        if not isinstance(t, Transform):
            raise TypeError(f"transforms must be Transform instances, got {t!r}")
        for key in t.state_keys:
            if key in owner:
                raise ValueError(f"{owner[key]!r} and {t!r} both keep state {key!r}")
            owner[key] = t


class Chain(Optimizer):
    """An optimizer made of a chain of transforms; every rangerlab optimizer is one.

    Each step, for every param group and every bucket of its tensors (same device and dtype) that
    have gradients: copy the gradients once (``p.grad`` is never modified), run each transform's
    ``update`` in order, apply ``w -= lr * u``, then each transform's ``after_update``.

    Args:
        params: parameters or param groups, as for any torch optimizer.
        transforms: a sequence of [`Transform`][rangerlab.transforms.Transform], or a function
            from a param group to one (the presets use it to pick, e.g., coupled or decoupled
            weight decay per group).
        **hyperparameters: group defaults. For a sequence, the keys its transforms declare
            (their declared defaults fill the rest) plus ``lr`` (default 1e-3), ``foreach``,
            ``fused``, ``master_weights``, ``skip_nonfinite`` and ``telemetry``.

    Low-precision weights: bf16/fp16 parameters are updated in float32 (state in float32) and
    rounded once per step; with ``master_weights=True`` a float32 copy is kept in the state
    (``master_param``) so updates below bf16's resolution accumulate instead of being lost.

    ``skip_nonfinite=True`` skips a whole step whose gradients hold inf or NaN (one host
    synchronisation per step), sets ``last_step_skipped``, counts it in
    ``skipped_steps`` and warns once. On the fused CUDA path the check and the skip happen on
    the device instead (no synchronisation; nothing is counted or warned). With the default
    ``False`` torch's semantics hold (the step is taken).

    ``foreach`` and ``fused`` have torch's meaning: with both None, the fused C++ step runs where
    the chain is a known composition and the tensors allow it, else the foreach kernels;
    ``fused=True`` insists on the fused step, ``foreach=True/False`` asks for the reference path.

    Examples:
        LAMB, built without a new class: ``||w|| = 5`` and Adam's first direction is ``sign(g)``,
        so the step is ``lr * 5`` along it.

        >>> import torch
        >>> from rangerlab.transforms import (add_decayed_weights, scale_by_adam,
        ...                                   scale_by_trust_ratio)
        >>> w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
        >>> w.grad = torch.tensor([1.0, 0.0])
        >>> lamb = Chain([w], [scale_by_adam(), add_decayed_weights(), scale_by_trust_ratio()],
        ...              lr=0.1, weight_decay=0.0)
        >>> lamb.step()
        >>> w.detach()
        tensor([2.5000, 4.0000])
    """

    #: GradScaler passes ``grad_scale`` and ``found_inf`` to ``step()`` instead of unscaling and
    #: reading ``found_inf`` on the host itself: the Triton path handles both on the device; the
    #: other paths unscale their private copies and read ``found_inf`` once.
    _step_supports_amp_scaling = True

    def __init__(self, params: Iterable, transforms: ChainSpec, /, **hyperparameters: Any):
        if callable(transforms) and not isinstance(transforms, Transform):
            # A function of the group: the keys it reads to choose the links are settings too.
            reader = _KeyReader({**COMMON_DEFAULTS, **hyperparameters})
            try:
                chosen = tuple(transforms(reader))
            except KeyError as error:
                raise TypeError(
                    f"the transforms function reads the group key {error.args[0]!r}, which has "
                    "no value: pass it as a hyperparameter"
                ) from None
            read = reader.read
        else:
            chosen = transforms = tuple(transforms)
            read = set()
        _check_transforms(chosen)
        declared = declared_hyperparams(chosen)
        unknown = set(hyperparameters) - set(declared) - set(COMMON_DEFAULTS) - read
        if unknown:
            valid = ", ".join(sorted({*declared, *COMMON_DEFAULTS, *read}))
            raise TypeError(
                f"unknown hyperparameter(s) {', '.join(sorted(unknown))} for this chain; "
                f"valid: {valid}"
            )
        defaults = {**COMMON_DEFAULTS, **declared, **hyperparameters}
        self._transforms = transforms
        check_group(defaults)
        self.skipped_steps = 0
        self.last_step_skipped = False
        super().__init__(params, defaults)

    # -- param groups ---------------------------------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group, validating its hyperparameters; its transforms set up group-level state.

        Raises:
            ValueError: an invalid hyperparameter, or the same tensor twice in the group (torch
                only warns, then steps it twice).
        """
        param_group["params"] = unique_params(param_group, len(self.param_groups))  # as torch
        merged = {**self.defaults, **param_group}
        check_group(merged)
        if merged["fused"] and fused.kernel_for(self.chain_for(merged)) is None:
            raise ValueError(
                f"fused=True: {type(self).__name__} has no fused kernel; use fused=None"
            )
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        transforms = self.chain_for(group)
        for key, value in declared_hyperparams(transforms).items():
            group.setdefault(key, value)  # a link this group's chain alone has keeps its default
        for t in transforms:
            t.init_group(group, self.param_groups[:-1])

    def chain_for(self, group: dict[str, Any]) -> Sequence[Transform]:
        """The transforms that update ``group``."""
        if isinstance(self._transforms, tuple):
            transforms = self._transforms
        else:
            transforms = tuple(self._transforms(group))
            _check_transforms(transforms)
        return transforms

    def telemetry(self, reset: bool = True) -> dict[str, float]:
        """Per-layer telemetry since the last read, as ``{"quantity/name": mean}``.

        See `rangerlab.telemetry` for the quantities; ``reset=False`` keeps the interval open.
        """
        return telemetry.read(self, reset)

    # -- the step -------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            work.append((group, params))
        if not any(params for _, params in work):
            # As in torch, parameters without gradients change nothing: no counter moves either
            # (a step counted here would shift every later Lookahead sync).
            self.last_step_skipped = False
            return loss
        # GradScaler hands these over when _step_supports_amp_scaling (deleting them after).
        control = fused.StepControl(
            getattr(self, "grad_scale", None), getattr(self, "found_inf", None)
        )
        on_device = fused.nonfinite_on_device(work)
        if on_device is not None:  # skip_nonfinite decided by the CUDA kernels, no host sync
            control = control.with_nonfinite(on_device)
            self.last_step_skipped = False
        else:
            self.last_step_skipped = self._has_nonfinite(work)
        # telemetry hook: per-step values (a recorded step syncs). A step GradScaler found inf/NaN
        # in is not a step, as when GradScaler skips calling step() itself.
        if telemetry.enabled(self) and not (
            control.found_inf is not None and bool(control.found_inf.item())
        ):
            telemetry.tick(self)
            telemetry.record_step(self, self.last_step_skipped)
        if self.last_step_skipped:
            self._skip()
            return loss
        for index, (group, params) in enumerate(work):
            transforms = self.chain_for(group)
            # telemetry hook: this group records this step (names for its tensors)
            names = telemetry.names_by_param(self, index) if telemetry.due(self, group) else None
            for t in transforms:
                t.begin_step(group)
            for bucket in _buckets(params):
                self._step_bucket(group, transforms, bucket, control, names)
            if control.found_inf is not None:
                for t in transforms:
                    t.skip_step(group, control.found_inf)
        return loss

    def _step_bucket(
        self,
        group: dict,
        transforms: Sequence[Transform],
        params: list,
        control: fused.StepControl = fused.NO_CONTROL,
        names: dict[int, str] | None = None,
    ) -> None:
        real = (
            [torch.view_as_real(p.detach()) for p in params] if params[0].is_complex() else params
        )
        kernel = fused.select(group, transforms, real)
        if names is not None:  # telemetry: the kernel fills the stats, or the probes record
            if kernel is not None and not getattr(kernel, "records", False):
                if group["fused"]:
                    raise ValueError(
                        f"fused=True with telemetry: this bucket's fused step ({kernel!r}) does "
                        "not record; use fused=None (telemetry steps then take the reference path)"
                    )
                kernel = None
            if kernel is None:
                transforms = telemetry.probed(self, group, transforms)
        on_device = getattr(kernel, "device_steps", False)
        if not on_device and control.found_inf is not None and bool(control.found_inf.item()):
            return  # GradScaler found inf/NaN: this bucket changes nothing (decided on the host)
        grads = [p.grad for p in params]
        states = [self.state[p] for p in params]
        if not on_device and control.grad_scale is not None:
            scale = float(control.grad_scale)  # a number: DTensor gradients divide by it too
            grads = [g / scale for g in grads]
        low = params[0].dtype in _state.LOW_PRECISION
        master = low and group["master_weights"]
        direct = low and not master and getattr(kernel, "direct_low_precision", False)
        if master:
            for p, s in zip(params, states):
                if "master_param" not in s:
                    s["master_param"] = p.detach().to(torch.float32, copy=True)
            weights = [s["master_param"] for s in states]
        elif direct:
            weights = params
        elif low:
            weights = [p.detach().to(torch.float32) for p in params]
        else:
            weights = params
        required = {"step"}.union(*(t.state_keys for t in transforms))
        for w, s in zip(weights, states):
            if required <= s.keys():  # the common case, checked in one set operation
                continue
            s.setdefault("step", _state.new_step())
            w = w.detach().to(torch.float32) if w.dtype in _state.LOW_PRECISION else w
            for t in transforms:
                if not s.keys() >= set(t.state_keys):
                    for key, value in t.init(w, group).items():
                        s.setdefault(key, value)
        complex_views = None
        if weights[0].is_complex():  # torch's rule: optimized exactly as its view_as_real
            complex_views = _state.RealViews(weights, grads, states)
            weights, grads, states = (
                complex_views.weights,
                complex_views.grads,
                complex_views.states,
            )
        # telemetry: a kernel that records gets the stats to fill (others never see them)
        recording, stats = {}, None
        if names is not None and kernel is not None:
            stats = fused.new_stats(len(weights), weights[0].device)
            recording = {"stats": stats}
        # a step on FSDP2 shards returns its stats still being gathered over the ranks
        gathered = None
        if on_device:  # the Triton step counts steps and takes GradScaler's tensors itself
            gathered = kernel(group, weights, grads, states, control, **recording)
        else:
            steps = fused.advance_steps([s["step"] for s in states])
            if kernel is not None:
                gathered = kernel(group, weights, grads, states, steps, **recording)
            else:
                self._reference_step(group, transforms, params, weights, grads, states, steps)
        if stats is not None:
            if on_device:  # the counters the kernel advanced, on the device
                steps = torch.stack([s["step"].reshape(()) for s in states])
            bucket_names = [names[id(p)] for p in params]
            recorded = gathered if gathered is not None else stats
            telemetry.record_stats(self, group, kernel, bucket_names, weights, recorded, steps)
        if complex_views is not None:
            complex_views.commit()
        elif weights is not params and not direct:
            pick_ops(group["foreach"], params).copy_(params, weights)

    def _reference_step(self, group, transforms, params, weights, grads, states, steps) -> None:
        ops = pick_ops(group["foreach"], params + grads)
        dtype = weights[0].dtype
        if all(g.dtype == dtype for g in grads):
            updates = ops.clone(grads)
        else:
            updates = [g.to(dtype, copy=True) for g in grads]
        ctx = Context(group=group, params=weights, states=states, steps=steps, ops=ops)
        for t in transforms:
            updates = t.update(updates, ctx)
        ops.add_(weights, updates, alpha=-float(group["lr"]))
        for t in transforms:
            t.after_update(ctx)

    # -- non-finite guard -----------------------------------------------------------------------

    def _has_nonfinite(self, work: list[tuple[dict, list]]) -> bool:
        grads = [
            p.grad
            for group, params in work
            if group["skip_nonfinite"]
            for p in params
            if p.grad.numel()
        ]
        flags = []
        for bucket in _buckets(grads):
            if foreach_supported(bucket):
                norms = torch._foreach_norm(bucket, ord=float("inf"))
                flags.append(torch.stack(norms).isfinite().all())
            else:  # DTensor shards: reduce over the whole tensor, so every rank decides alike
                flags.extend(_whole(torch.isfinite(g).all()) for g in bucket)
        return bool(flags) and not bool(torch.stack([f.cpu() for f in flags]).all())

    def _skip(self) -> None:
        self.skipped_steps += 1
        if self.skipped_steps == 1:
            warn(
                f"{type(self).__name__}: skipped a step whose gradients hold inf or NaN "
                "(skip_nonfinite=True); further skips are counted in .skipped_steps",
                RuntimeWarning,
            )

    # -- state ----------------------------------------------------------------------------------

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load ``state_dict`` after checking that it fits; on a misfit nothing changes.

        As torch's loader, plus: the state of bf16/fp16 weights stays float32 (torch would round
        it to the weights' dtype) and ``step`` counters stay on the CPU.
        """
        _state.check_state_dict(self, state_dict)
        known = [group.keys() & self.defaults.keys() for group in self.param_groups]
        super().load_state_dict(state_dict)
        for group, keys in zip(self.param_groups, known):  # from an older or foreign optimizer
            for key in keys - group.keys():
                group[key] = self.defaults[key]
        saved = state_dict["state"]
        for saved_id, param in _state.saved_params(state_dict, self.param_groups).items():
            if saved_id in saved:
                self.state[param] = _state.cast_state(param, saved[saved_id])

    def slow_weights(self) -> AbstractContextManager[None]:
        """Context manager: the Lookahead slow weights stand in for the parameters in the block.

        Evaluate on them (``with opt.slow_weights(): evaluate(model)``); the fast weights come back
        exactly at the end. Parameters without slow weights yet are left as they are.
        """
        return _state.swapped_in(
            [
                (p, self.state[p]["slow_param"])
                for group in self.param_groups
                for p in group["params"]
                if "slow_param" in self.state.get(p, {})
            ]
        )

    def __getstate__(self) -> dict[str, Any]:
        return {
            **super().__getstate__(),
            "_transforms": self._transforms,
            "skipped_steps": self.skipped_steps,
            "last_step_skipped": self.last_step_skipped,
        }


class _KeyReader(dict):
    """A param group that records which keys a transforms function reads."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self.read.add(key)  # type: ignore[arg-type]
        return super().__contains__(key)


def _whole(tensor: Tensor) -> Tensor:
    """A DTensor reduction's value on every rank (plain tensors pass through)."""
    full_tensor = getattr(tensor, "full_tensor", None)
    return full_tensor() if full_tensor is not None else tensor


def _buckets(params: list[Tensor]) -> list[list[Tensor]]:
    by_kind: dict[tuple, list[Tensor]] = {}
    for p in params:
        by_kind.setdefault((p.device, p.dtype), []).append(p)
    return list(by_kind.values())
