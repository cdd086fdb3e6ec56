"""State-dict checks and dtype policy shared by `Chain` and `Lookahead`."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from .._validation import check_group

LOW_PRECISION = (torch.float16, torch.bfloat16)


def state_dtype(param: Tensor) -> torch.dtype:
    """Optimizer state is float32 for bf16/fp16 weights and the weights' own dtype otherwise."""
    return torch.float32 if param.dtype in LOW_PRECISION else param.dtype


def new_step() -> Tensor:
    """A per-tensor step counter, as torch.optim keeps it (a 0-d float32 tensor on the CPU)."""
    return torch.zeros((), dtype=torch.float32)


class RealViews:
    """Complex weights, gradients and state seen as their ``torch.view_as_real`` views.

    torch's rule for complex parameters: each is optimized exactly as its real view (a trailing
    dimension of 2 for the real and imaginary parts), which is what the transforms and kernels
    see through this class. State stays complex, as torch keeps it (a torch checkpoint loads);
    `commit` stores state that the step created or replaced back in complex form.
    """

    def __init__(self, weights: list[Tensor], grads: list[Tensor], states: list[dict]):
        self.weights = [torch.view_as_real(w.detach()) for w in weights]
        self.grads = [torch.view_as_real(g.resolve_conj()) for g in grads]
        self._complex = states
        self.states = [{k: _real(v) for k, v in s.items()} for s in states]
        self._views = [dict(s) for s in self.states]

    def commit(self) -> None:
        """Store entries the step added or replaced (e.g. momentum buffers) in the real state."""
        for complex_state, state, views in zip(self._complex, self.states, self._views):
            for key, value in state.items():
                if views.get(key) is not value:
                    complex_state[key] = _complex(value)


def _real(value: Any) -> Any:
    return torch.view_as_real(value) if isinstance(value, Tensor) and value.is_complex() else value


def _complex(value: Any) -> Any:
    if (
        isinstance(value, Tensor)
        and value.is_floating_point()
        and value.dim()
        and value.shape[-1] == 2
    ):
        return torch.view_as_complex(value.contiguous())
    return value


def param_index(groups: Iterable[Mapping[str, Any]]) -> list[Tensor]:
    """The parameters in the order ``state_dict`` numbers them."""
    seen: dict[int, Tensor] = {}
    for p in itertools.chain.from_iterable(g["params"] for g in groups):
        seen.setdefault(id(p), p)
    return list(seen.values())


def saved_params(
    state_dict: Mapping[str, Any], groups: Iterable[Mapping[str, Any]]
) -> dict[Any, Tensor]:
    """The saved parameter ids of ``state_dict`` mapped to ``groups``' parameters, in order."""
    ids = itertools.chain.from_iterable(g["params"] for g in state_dict["param_groups"])
    params = itertools.chain.from_iterable(g["params"] for g in groups)
    return dict(zip(ids, params))


def check_state_dict(
    optimizer: torch.optim.Optimizer, state_dict: Any, shaped_keys: Iterable[str] | None = None
) -> None:
    """Raise ``ValueError`` unless ``state_dict`` fits ``optimizer``; nothing is changed.

    Checks the layout, the number and sizes of the param groups, the saved hyperparameters, and
    that every saved state tensor named in ``shaped_keys`` (all but ``step`` when None) has the
    shape of its parameter.
    """
    if (
        not isinstance(state_dict, Mapping)
        or not isinstance(state_dict.get("state"), Mapping)
        or not isinstance(state_dict.get("param_groups"), list)
    ):
        raise ValueError(
            "state_dict must be a mapping with 'state' (a dict) and 'param_groups' (a list), as "
            "returned by Optimizer.state_dict()"
        )
    groups, saved_groups = optimizer.param_groups, state_dict["param_groups"]
    if len(groups) != len(saved_groups):
        raise ValueError(
            f"loaded state dict has {len(saved_groups)} parameter groups, the optimizer has "
            f"{len(groups)}"
        )
    for i, (group, saved) in enumerate(zip(groups, saved_groups)):
        if len(group["params"]) != len(saved["params"]):
            raise ValueError(
                f"loaded state dict's parameter group {i} has {len(saved['params'])} parameters, "
                f"the optimizer's has {len(group['params'])}"
            )
        check_group(saved)
    id_map = saved_params(state_dict, groups)
    shaped = None if shaped_keys is None else set(shaped_keys)
    for key, entry in state_dict["state"].items():
        param = id_map.get(key)
        if param is None or not isinstance(entry, Mapping):
            continue
        for name, value in entry.items():
            if not isinstance(value, Tensor) or name == "step":
                continue
            if (shaped is None or name in shaped) and value.shape != param.shape:
                raise ValueError(
                    f"loaded state for parameter {key} has {name!r} of shape "
                    f"{tuple(value.shape)}, but the parameter has shape {tuple(param.shape)}"
                )
            if (shaped is None or name in shaped) and _sharding(value) != _sharding(param):
                raise ValueError(
                    f"loaded state for parameter {key} has {name!r} {_sharding(value)}, but the "
                    f"parameter is {_sharding(param)}; state saved with another sharding or "
                    "number of processes loads through "
                    "torch.distributed.checkpoint (get_optimizer_state_dict, "
                    "set_optimizer_state_dict), which reshards it"
                )


def _sharding(tensor: Tensor) -> str:
    """How a tensor is split over processes (a DTensor's placements and mesh), in words."""
    mesh, placements = getattr(tensor, "device_mesh", None), getattr(tensor, "placements", None)
    if mesh is None or placements is None:
        return "not sharded"
    return f"sharded as {tuple(placements)} over ranks {mesh.mesh.tolist()}"


def cast_state(param: Tensor, entry: Mapping[str, Any], keys: Iterable[str] | None = None) -> dict:
    """Copy saved per-parameter state onto ``param``'s device with rangerlab's dtype policy.

    Floating tensors (``keys`` only, or all but ``step`` when None) become ``state_dtype``
    (float32 for low-precision weights, where torch's loader would round them to bf16), complex
    state stays complex (as torch keeps it); ``step`` is a CPU float32 counter, also when it was
    saved as a Python number.
    """
    out = dict(entry)
    for name, value in entry.items():
        if name == "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
            # Older torch and other libraries save the count as a Python number; torch's own
            # optimizers turn it into a tensor on load, and so do we.
            out[name] = torch.tensor(float(value), dtype=torch.float32)
            continue
        if not isinstance(value, Tensor):
            continue
        if name == "step":
            out[name] = value.detach().to(device="cpu", dtype=torch.float32).clone()
        elif (keys is None or name in keys) and (value.is_floating_point() or value.is_complex()):
            out[name] = value.detach().to(device=param.device, dtype=state_dtype(param)).clone()
    return out


def run_state_dict_hooks(optimizer: torch.optim.Optimizer, build) -> dict:
    """``state_dict()`` with the optimizer's registered pre- and post-hooks, in torch's order."""
    for hook in optimizer._optimizer_state_dict_pre_hooks.values():
        hook(optimizer)
    state_dict = build()
    for hook in optimizer._optimizer_state_dict_post_hooks.values():
        result = hook(optimizer, state_dict)
        if result is not None:
            state_dict = result
    return state_dict


@contextmanager
def swapped_in(pairs: list[tuple[Tensor, Tensor]]):
    """Copy each ``source`` into its ``param`` for the block, then restore the params exactly."""
    saved = [p.detach().clone() for p, _ in pairs]
    with torch.no_grad():
        for p, source in pairs:
            p.copy_(source)
    try:
        yield
    finally:
        with torch.no_grad():
            for (p, _), fast in zip(pairs, saved):
                p.copy_(fast)
