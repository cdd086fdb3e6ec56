"""Build an optimizer by name, with the conventional parameter groups of a model.

One frozen [`OptimizerInfo`][rangerlab.factory.OptimizerInfo] per name; variants are data
(``adamw`` is ``Adam`` with ``decoupled_weight_decay=True``, ``larc`` is ``LARS`` with
``clip=True``), not new classes.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from torch.optim import Optimizer

from .optim import LARS, SGD, Adam, Lookahead, RAdam, Ranger, RangerLARS
from .optim.lamb import LAMB

#: Arguments every rangerlab optimizer takes that are not hyperparameters of the algorithm.
_NOT_HYPERPARAMETERS = ("self", "params")


@dataclass(frozen=True)
class OptimizerInfo:
    """A registry entry: how ``create_optimizer(..., name)`` builds its optimizer.

    Attributes:
        name: the registry name.
        cls: the optimizer class.
        description: one line for [`list_optimizers`][rangerlab.list_optimizers].
        fixed: arguments the name implies (``adamw``: ``decoupled_weight_decay=True``); the user
            cannot pass them.
        layer_wise: the optimizer scales updates by a layer-wise trust ratio, so 1-D parameters
            get ``trust_ratio=False`` (the SimCLR convention).
        has_lookahead: the optimizer already contains Lookahead, so ``lookahead=True`` is refused.

    Examples:
        >>> info = optimizer_info("larc")
        >>> info.cls.__name__, dict(info.fixed), info.layer_wise
        ('LARS', {'clip': True}, True)
    """

    name: str
    cls: type[Optimizer]
    description: str
    fixed: Mapping[str, Any] = field(default_factory=dict)
    layer_wise: bool = False
    has_lookahead: bool = False

    def hyperparameters(self) -> tuple[str, ...]:
        """The keyword arguments [`create_optimizer`][rangerlab.create_optimizer] accepts."""
        names = inspect.signature(self.cls.__init__).parameters
        return tuple(n for n in names if n not in _NOT_HYPERPARAMETERS and n not in self.fixed)


_REGISTRY: dict[str, OptimizerInfo] = {
    info.name: info
    for info in (
        OptimizerInfo("sgd", SGD, "SGD with optional (Nesterov) momentum; torch.optim.SGD"),
        OptimizerInfo("adam", Adam, "Adam with L2 weight decay; torch.optim.Adam"),
        OptimizerInfo(
            "adamw",
            Adam,
            "Adam with decoupled weight decay; torch.optim.AdamW",
            fixed={"decoupled_weight_decay": True},
        ),
        OptimizerInfo("radam", RAdam, "Rectified Adam: no hand-tuned warmup; torch.optim.RAdam"),
        OptimizerInfo(
            "lars",
            LARS,
            "SGD momentum with a layer-wise trust ratio (large batches)",
            layer_wise=True,
        ),
        OptimizerInfo(
            "larc",
            LARS,
            "LARS with the trust ratio clipped so no layer's rate exceeds lr",
            fixed={"clip": True},
            layer_wise=True,
        ),
        OptimizerInfo(
            "lamb",
            LAMB,
            "Adam's direction with a layer-wise trust ratio (large batches)",
            layer_wise=True,
        ),
        OptimizerInfo(
            "ranger",
            Ranger,
            "RAdam + Lookahead + Gradient Centralization",
            has_lookahead=True,
        ),
        OptimizerInfo(
            "ranger_lars",
            RangerLARS,
            "Ranger with LAMB's layer-wise trust ratio (Over9000)",
            layer_wise=True,
            has_lookahead=True,
        ),
    )
}


def list_optimizers() -> dict[str, str]:
    """The names [`create_optimizer`][rangerlab.create_optimizer] accepts, with descriptions.

    Examples:
        >>> list_optimizers()["adamw"]
        'Adam with decoupled weight decay; torch.optim.AdamW'
    """
    return {name: info.description for name, info in _REGISTRY.items()}


def optimizer_info(name: str) -> OptimizerInfo:
    """The registry entry for ``name``; raises ``ValueError`` listing the valid names.

    Examples:
        >>> optimizer_info("adamw").fixed
        {'decoupled_weight_decay': True}
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"Unknown optimizer name: {name!r}; valid: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def param_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    no_weight_decay: Iterable[str] = (),
    layer_wise: bool = False,
) -> list[dict[str, Any]]:
    """Split a model's trainable parameters into the conventional decay / no-decay groups.

    A parameter goes to the no-decay group (``weight_decay=0``) when it is 1-D or 0-D (biases,
    norm weights, scalars), or when its name, or a dotted prefix of it, is in ``no_weight_decay``
    or in ``model.no_weight_decay()`` (timm's convention, e.g. ``{"pos_embed", "cls_token"}``).
    With ``layer_wise`` that group also gets ``trust_ratio=False``: LARS-style trust ratios are
    not applied to biases and norm weights (the SimCLR convention). Empty groups are left out;
    parameters with ``requires_grad=False`` too.

    Args:
        model: the module whose ``named_parameters()`` are split.
        weight_decay: the decay of the decay group.
        no_weight_decay: extra names (or dotted prefixes) to exclude from decay.
        layer_wise: add ``trust_ratio=False`` to the no-decay group.

    Returns:
        Param groups for any torch optimizer: ``[{"params": decay, "weight_decay": wd},
        {"params": no_decay, "weight_decay": 0.0[, "trust_ratio": False]}]``.

    Examples:
        >>> import torch
        >>> groups = param_groups(torch.nn.Linear(3, 2), 0.1)
        >>> [(len(g["params"]), g["weight_decay"]) for g in groups]   # the weight; the bias
        [(1, 0.1), (1, 0.0)]
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(no_weight_decay, str):
        raise TypeError(f"no_weight_decay must be a collection of names, got {no_weight_decay!r}")
    skip = set(no_weight_decay)
    if hasattr(model, "no_weight_decay"):
        skip |= set(model.no_weight_decay())
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        prefixes = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
        (no_decay if p.ndim <= 1 or prefixes & skip else decay).append(p)
    quiet = {"weight_decay": 0.0, **({"trust_ratio": False} if layer_wise else {})}
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, **quiet}]
    return [g for g in groups if g["params"]]


def create_optimizer(
    model_or_params: nn.Module | Iterable,
    name: str,
    lr: float | None = None,
    weight_decay: float | None = None,
    *,
    lookahead: bool = False,
    **hyperparameters: Any,
) -> Optimizer:
    """Build the optimizer called ``name`` (see [`list_optimizers`][rangerlab.list_optimizers]).

    Given an ``nn.Module``, the parameters are split by [`param_groups`][rangerlab.param_groups]:
    no decay for
    1-D parameters and ``model.no_weight_decay()``, and for the layer-wise optimizers (``lars``,
    ``larc``, ``lamb``, ``ranger_lars``) no trust ratio for them either. Given parameters or
    param groups, they are used as they are.

    Args:
        model_or_params: a module, or what any torch optimizer takes as ``params``.
        name: the registry name, e.g. ``"ranger"``.
        lr: learning rate; None keeps the optimizer's default.
        weight_decay: the decay of the decay group; None keeps the optimizer's default (0).
        lookahead: wrap the optimizer in [`Lookahead`][rangerlab.Lookahead]; ``k`` and ``alpha``
            then go to the wrapper. Refused for ``ranger`` and ``ranger_lars``, which already
            have it.
        **hyperparameters: the optimizer's own keyword arguments (``betas``, ``momentum``, ...,
            ``foreach``); an unknown one raises ``TypeError`` listing the valid ones.

    Returns:
        The optimizer (a [`Lookahead`][rangerlab.Lookahead] around it with ``lookahead=True``).

    Examples:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8))
        >>> opt = create_optimizer(model, "ranger_lars", lr=1e-3, weight_decay=1e-2)
        >>> [(g["weight_decay"], g["trust_ratio"]) for g in opt.param_groups]
        [(0.01, True), (0.0, False)]
    """
    info = optimizer_info(name)
    if not isinstance(lookahead, bool):
        raise ValueError(f"Invalid lookahead: {lookahead!r} (expected True or False)")
    if lookahead and info.has_lookahead:
        raise ValueError(f"lookahead=True: {name!r} already includes Lookahead")
    wrapper_keys = ("k", "alpha") if lookahead else ()
    valid = info.hyperparameters() + wrapper_keys
    unknown = sorted(set(hyperparameters) - set(valid))
    if unknown:
        raise TypeError(
            f"Unknown hyperparameter(s) for {name!r}: {', '.join(unknown)}; valid: "
            f"{', '.join(valid)}"
        )
    wrapper = {key: hyperparameters.pop(key) for key in wrapper_keys if key in hyperparameters}
    kwargs = {**info.fixed, **hyperparameters}
    if lr is not None:
        kwargs["lr"] = lr
    if weight_decay is not None:
        kwargs["weight_decay"] = weight_decay
    params = model_or_params
    if isinstance(model_or_params, nn.Module):
        default = inspect.signature(info.cls.__init__).parameters["weight_decay"].default
        params = param_groups(
            model_or_params, kwargs.get("weight_decay", default), layer_wise=info.layer_wise
        )
        # Named tensors, so the groups carry torch's ``param_names`` (telemetry reads them).
        names = {id(p): name for name, p in model_or_params.named_parameters()}
        params = [{**g, "params": [(names[id(p)], p) for p in g["params"]]} for g in params]
    optimizer = info.cls(params, **kwargs)
    return Lookahead(optimizer, **wrapper) if lookahead else optimizer
