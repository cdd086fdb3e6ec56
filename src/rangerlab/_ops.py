"""The few list operations the transforms are written in, in two interchangeable flavours.

Every transform does its maths once, over lists of tensors, through an ``ops`` object:

* ``FOREACH`` maps each operation to one ``torch._foreach_*`` call (one kernel launch per
  list on CUDA, one dispatch per list on CPU);
* ``LOOP`` runs the same operation tensor by tensor, for tensors that foreach kernels do not
  accept (tensor subclasses such as DTensor, exotic devices) and as the reference the list path is
  tested against.

Scalars may be Python numbers, or per-tensor lists of numbers or 0-d tensors (a 0-d tensor keeps a
value such as a trust ratio on the device: no host synchronisation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

Scalars = float | Sequence[float] | Sequence[Tensor]


def _each(value: Scalars, n: int) -> Sequence:
    return value if isinstance(value, (list, tuple)) else [value] * n


class _Loop:
    @staticmethod
    def add_(xs: list[Tensor], ys: list[Tensor], alpha: float = 1.0) -> None:
        for x, y in zip(xs, ys):
            x.add_(y, alpha=alpha)

    @staticmethod
    def add_scalar_(xs: list[Tensor], value: Scalars) -> None:
        for x, v in zip(xs, _each(value, len(xs))):
            x.add_(v)

    @staticmethod
    def mul_(xs: list[Tensor], value: Scalars) -> None:
        for x, v in zip(xs, _each(value, len(xs))):
            x.mul_(v)

    @staticmethod
    def div_(xs: list[Tensor], value: Scalars | list[Tensor]) -> None:
        for x, v in zip(xs, _each(value, len(xs))):
            x.div_(v)

    @staticmethod
    def lerp_(xs: list[Tensor], ys: list[Tensor], weight: float) -> None:
        for x, y in zip(xs, ys):
            x.lerp_(y, weight)

    @staticmethod
    def addcmul_(xs: list[Tensor], ys: list[Tensor], zs: list[Tensor], value: float) -> None:
        for x, y, z in zip(xs, ys, zs):
            x.addcmul_(y, z, value=value)

    @staticmethod
    def sqrt(xs: list[Tensor]) -> list[Tensor]:
        return [x.sqrt() for x in xs]

    @staticmethod
    def copy_(dst: list[Tensor], src: list[Tensor]) -> None:
        for d, s in zip(dst, src):
            d.copy_(s)

    @staticmethod
    def clone(xs: list[Tensor]) -> list[Tensor]:
        return [x.clone() for x in xs]

    @staticmethod
    def norm(xs: list[Tensor]) -> list[Tensor]:
        return [torch.linalg.vector_norm(x) for x in xs]


class _Foreach:
    @staticmethod
    def add_(xs: list[Tensor], ys: list[Tensor], alpha: float = 1.0) -> None:
        torch._foreach_add_(xs, ys, alpha=alpha)

    @staticmethod
    def add_scalar_(xs: list[Tensor], value: Scalars) -> None:
        torch._foreach_add_(xs, value)

    @staticmethod
    def mul_(xs: list[Tensor], value: Scalars) -> None:
        torch._foreach_mul_(xs, value)

    @staticmethod
    def div_(xs: list[Tensor], value: Scalars | list[Tensor]) -> None:
        torch._foreach_div_(xs, value)

    @staticmethod
    def lerp_(xs: list[Tensor], ys: list[Tensor], weight: float) -> None:
        torch._foreach_lerp_(xs, ys, weight)

    @staticmethod
    def addcmul_(xs: list[Tensor], ys: list[Tensor], zs: list[Tensor], value: float) -> None:
        torch._foreach_addcmul_(xs, ys, zs, value=value)

    @staticmethod
    def sqrt(xs: list[Tensor]) -> list[Tensor]:
        return list(torch._foreach_sqrt(xs))

    @staticmethod
    def copy_(dst: list[Tensor], src: list[Tensor]) -> None:
        torch._foreach_copy_(dst, src)

    @staticmethod
    def clone(xs: list[Tensor]) -> list[Tensor]:
        # _foreach_add with 0 allocates fresh outputs: a batched clone.
        return list(torch._foreach_add(xs, 0))

    @staticmethod
    def norm(xs: list[Tensor]) -> list[Tensor]:
        return list(torch._foreach_norm(xs))


LOOP = _Loop()
FOREACH = _Foreach()
Ops = _Loop | _Foreach

_FOREACH_DEVICES = {"cpu", "cuda", "xpu", "mps"}
_PLAIN_TYPES = (Tensor, torch.nn.Parameter)


def foreach_supported(tensors: Sequence[Tensor]) -> bool:
    """True when every tensor is a plain (or Parameter) tensor on a device with foreach kernels."""
    return all(type(t) in _PLAIN_TYPES and t.device.type in _FOREACH_DEVICES for t in tensors)


def pick_ops(foreach: bool | None, tensors: Sequence[Tensor]) -> Ops:
    """torch's meaning of ``foreach``: None picks the list path wherever it is supported.

    Tensor subclasses (DTensor shards under FSDP2) take the per-tensor path even with
    ``foreach=True``: several foreach kernels have no DTensor sharding rule, and the loop computes
    the same result.
    """
    if foreach is False or any(type(t) not in _PLAIN_TYPES for t in tensors):
        return LOOP
    if foreach is None:
        return FOREACH if foreach_supported(tensors) else LOOP
    return FOREACH
