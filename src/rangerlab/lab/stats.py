"""Summaries over seeds and the one rule every verdict uses.

The rule: a difference between two sets of per-seed numbers counts only when it exceeds twice its
standard error, ``|mean_a - mean_b| > 2 * sqrt(var_a/n_a + var_b/n_b)`` (about a 95% level for a
normal difference), and needs at least two seeds on each side. Otherwise it is inconclusive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
RULE = (
    "a difference counts when it exceeds twice its standard error over seeds "
    "(|mean difference| > 2 SE, at least 2 seeds each); otherwise the verdict is inconclusive"
)


def mean(xs: Sequence[float]) -> float:
    """Arithmetic mean of a non-empty sequence."""
    if not xs:
        raise ValueError("mean of an empty sequence")
    return sum(xs) / len(xs)


def std(xs: Sequence[float]) -> float:
    """Sample standard deviation (n - 1); 0 for a single value."""
    if len(xs) < 2:
        return 0.0
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def summary(xs: Sequence[float]) -> dict[str, float]:
    """``{"mean", "std", "n"}`` of per-seed values."""
    return {"mean": mean(xs), "std": std(xs), "n": len(xs)}


def fmt(xs: Sequence[float], digits: int = 3) -> str:
    """``mean ± std`` as text (just the mean for one seed)."""
    s = summary(xs)
    if s["n"] < 2:
        return f"{s['mean']:.{digits}g}"
    return f"{s['mean']:.{digits}g} ± {s['std']:.2g}"


def compare(a: Sequence[float], b: Sequence[float]) -> int:
    """+1 if ``a`` is reliably larger than ``b``, -1 if reliably smaller, 0 if not distinguishable.

    Uses the module's rule: the mean difference must exceed twice its standard error, with at least
    two values on each side. Identical constant samples are indistinguishable (0).
    """
    if len(a) < 2 or len(b) < 2:
        return 0
    diff = mean(a) - mean(b)
    se = math.sqrt(std(a) ** 2 / len(a) + std(b) ** 2 / len(b))
    if diff == 0 or abs(diff) <= 2 * se:
        return 0
    return 1 if diff > 0 else -1


def verdict(direction: int, detail: str) -> dict[str, str]:
    """A verdict record from a comparison result: +1 supported, -1 contradicted, 0 inconclusive."""
    status = {1: SUPPORTED, -1: CONTRADICTED, 0: INCONCLUSIVE}[direction]
    return {"status": status, "detail": detail, "rule": RULE}


def tally(results: Sequence[int]) -> int:
    """Combine several comparisons into one: +1 if more support than contradict and at least half
    support, -1 if more contradict than support, else 0."""
    wins = sum(r > 0 for r in results)
    losses = sum(r < 0 for r in results)
    if wins > losses and 2 * wins >= len(results):
        return 1
    if losses > wins:
        return -1
    return 0


def compare_to(a: Sequence[float], value: float) -> int:
    """+1 if ``a`` is reliably above ``value``, -1 if reliably below, 0 otherwise (``mean - value``
    against twice the standard error of the mean; at least two values)."""
    if len(a) < 2:
        return 0
    diff = mean(a) - value
    se = std(a) / math.sqrt(len(a))
    if diff == 0 or abs(diff) <= 2 * se:
        return 0
    return 1 if diff > 0 else -1
