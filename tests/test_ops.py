"""The two flavours of list operations agree, and each operation is used (no dead code)."""

from __future__ import annotations

import inspect
from pathlib import Path

import torch

import rangerlab
from rangerlab._ops import FOREACH, LOOP

OPERATIONS = sorted(name for name in vars(type(LOOP)) if not name.startswith("_"))
SOURCE = Path(rangerlab.__file__).parent


def test_both_flavours_offer_the_same_operations():
    assert OPERATIONS == sorted(n for n in vars(type(FOREACH)) if not n.startswith("_"))
    assert all(inspect.isfunction(getattr(LOOP, name)) for name in OPERATIONS)


def test_every_operation_is_used_by_the_library():
    text = "\n".join(path.read_text() for path in SOURCE.rglob("*.py") if path.name != "_ops.py")
    unused = [name for name in OPERATIONS if f"ops.{name}(" not in text]
    assert not unused


def test_both_flavours_compute_the_same():
    def tensors():
        gen = torch.Generator().manual_seed(0)
        return [torch.rand(s, generator=gen, dtype=torch.float64) + 0.5 for s in [(3,), (2, 2)]]

    for ops_name in ("add_", "mul_", "div_", "add_scalar_"):
        results = []
        for ops in (LOOP, FOREACH):
            xs, ys = tensors(), tensors()
            if ops_name == "add_":
                ops.add_(xs, ys, alpha=0.5)
            else:
                getattr(ops, ops_name)(xs, [0.5, 2.0])
            results.append(xs)
        for a, b in zip(*results):
            assert torch.equal(a, b)
    xs = tensors()
    assert all(torch.equal(a, b) for a, b in zip(LOOP.norm(xs), FOREACH.norm(xs)))
    assert all(torch.equal(a, b) for a, b in zip(LOOP.sqrt(xs), FOREACH.sqrt(xs)))
