"""Paired differences over shared seeds, their 95% intervals, and the one rule every verdict uses.

Both arms of a comparison run with the same seeds (the same seed gives both the same data order
and initialisation), so each seed yields one paired difference ``d_i``. The interval for the mean
difference is the exact sign-flip (randomization) interval: a shift ``delta`` is inside it when the
test of ``d - delta`` against all ``2^n`` sign flips does not reject at the interval's level
(Pitman 1937; Good, *Permutation Tests*, ch. 3). It needs only that, with no difference between
the arms, a paired difference is as likely to be ``+d`` as ``-d`` (true by construction when the
arms are exchangeable), so it stays honest with ties, with accuracies that move in steps of one
test image, and with zero spread, where a t-interval collapses to a point and claims certainty.
Its price: with ``n`` seeds the smallest attainable p-value is ``2 / 2^n``, so fewer than 6 seeds
can never exclude anything at 95% (the interval is then unbounded, and the verdict inconclusive).

The rule: a claim says the effect lies above (or below) a threshold (0, or a stated minimal
effect). It is *supported* when the whole interval lies on the claimed side, *contradicted* when
the whole interval lies on the other side, and *inconclusive* otherwise. When a verdict combines
``m`` comparisons each interval is widened to level ``1 - 0.05/m`` (Bonferroni): the combined
verdict is then wrong with probability at most 5% whatever the comparisons' dependence.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
ILLUSTRATION = "illustration"
ALPHA = 0.05
#: Up to this many seeds every sign flip is enumerated; beyond it, a fixed random sample.
EXACT_MAX_N = 12
DRAWS = 8192
RULE = (
    "95% interval of the mean paired difference over shared seeds (exact sign-flip interval; "
    "Bonferroni-widened when a verdict combines several comparisons); supported or contradicted "
    "only when the whole interval lies on one side of the threshold, otherwise inconclusive"
)


def mean(xs: Sequence[float]) -> float:
    """Arithmetic mean of a non-empty sequence."""
    if len(xs) == 0:
        raise ValueError("mean of an empty sequence")
    return float(sum(xs) / len(xs))


def std(xs: Sequence[float]) -> float:
    """Sample standard deviation (n - 1 in the denominator); 0 for a single value."""
    if len(xs) < 2:
        return 0.0
    return float(np.std(np.asarray(xs, dtype=float), ddof=1))


def fmt(xs: Sequence[float], digits: int = 3) -> str:
    """``mean ± sd`` (sample standard deviation over seeds) as text; just the mean for one seed."""
    if len(xs) < 2:
        return f"{mean(xs):.{digits}g}"
    return f"{mean(xs):.{digits}g} ± {std(xs):.2g}"


@functools.lru_cache(maxsize=64)
def _signs(n: int) -> np.ndarray:
    """All ``2^n`` sign vectors (``n <= EXACT_MAX_N``), else ``DRAWS`` random ones after the
    identity (a fixed generator: the same interval on every run)."""
    if n <= EXACT_MAX_N:
        bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
        return (1 - 2 * bits).astype(float)
    rng = np.random.default_rng(20190924)
    draws = rng.choice([-1.0, 1.0], size=(DRAWS, n))
    return np.vstack([np.ones((1, n)), draws])


def sign_flip_p(d: Sequence[float], delta: float = 0.0) -> float:
    """Two-sided p-value of the sign-flip test that the paired differences ``d`` centre on
    ``delta``: the share of sign flips ``s`` with ``|mean(s (d - delta))| >= |mean(d - delta)|``.

    Example: ``sign_flip_p([1, 1, 1, 1, 1, 1]) == 2 / 64`` (only the two constant flips are as
    extreme).
    """
    return float(_p_many(np.asarray(d, dtype=float), np.array([delta]))[0])


def _p_many(x: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """:func:`sign_flip_p` of ``x`` at every shift in ``deltas`` (one matrix product)."""
    e = x[None, :] - deltas[:, None]  # (shifts, n)
    flips = np.abs(_signs(len(x)) @ e.T)  # (sign vectors, shifts)
    obs = np.abs(e.sum(axis=1))
    slack = 1e-9 * (np.abs(e).sum(axis=1) + 1e-300)  # equal up to rounding: "as extreme"
    return np.mean(flips >= obs - slack, axis=0)


def min_p(n: int) -> float:
    """The smallest p-value the sign-flip test can reach with ``n`` paired seeds."""
    return 2.0 / 2**n if n <= EXACT_MAX_N else 1.0 / (DRAWS + 1)


def seeds_needed(comparisons: int = 1, alpha: float = ALPHA) -> int:
    """Fewest paired seeds with which ``comparisons`` Bonferroni intervals can exclude a value."""
    n = 1
    while min_p(n) > alpha / comparisons:
        n += 1
    return n


def interval(d: Sequence[float], level: float = 1 - ALPHA) -> tuple[float, float]:
    """The sign-flip interval for the mean of ``d`` at confidence ``level``: the set of shifts
    the test does not reject, found by a zooming grid search from the mean out to the data's
    range (outside the range every shift gives the minimal p-value). ``(-inf, inf)`` when
    ``n`` is too small to reject anything."""
    x = np.asarray(d, dtype=float)
    alpha = 1 - level
    if len(x) < 2 or min_p(len(x)) > alpha or not np.all(np.isfinite(x)):
        return -math.inf, math.inf
    centre = float(x.mean())
    span = float(x.max() - x.min())
    pad = 1e-9 * (span + abs(centre)) + 1e-300

    def edge(outside: float) -> float:
        inside = centre  # p(centre) = 1: always inside
        for _ in range(4):  # zoom on the outermost kept shift: 16^4 finer than the range
            grid = np.linspace(inside, outside, 17)
            kept = np.nonzero(_p_many(x, grid) > alpha)[0]
            j = int(kept.max()) if kept.size else 0
            if j == len(grid) - 1:
                return outside
            inside, outside = grid[j], grid[j + 1]
        return float(outside)  # the first rejected shift: the interval errs on the wide side

    return edge(float(x.min()) - pad), edge(float(x.max()) + pad)


def decide(
    d: Sequence[float], direction: int, threshold: float = 0.0, level: float = 1 - ALPHA
) -> dict[str, float | str]:
    """Apply the rule to paired differences ``d``: the claim is that their mean lies above
    (``direction=+1``) or below (``-1``) ``threshold``.

    Returns ``{"mean", "lo", "hi", "p", "level", "status"}``; ``p`` is the sign-flip p-value at the
    threshold. The interval is widened, if the search missed it, to hold the threshold whenever
    the test does not reject it there, so "the interval excludes the threshold" always means
    ``p <= 1 - level``.
    """
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction!r}")
    lo, hi = interval(d, level)
    p = sign_flip_p(d, threshold) if len(d) >= 2 else 1.0
    if p > 1 - level:
        lo, hi = min(lo, threshold), max(hi, threshold)
    above, below = lo > threshold, hi < threshold
    if (above and direction > 0) or (below and direction < 0):
        status = SUPPORTED
    elif above or below:
        status = CONTRADICTED
    else:
        status = INCONCLUSIVE
    return {"mean": mean(d), "lo": lo, "hi": hi, "p": p, "level": level, "status": status}


def combine(statuses: Sequence[str]) -> str:
    """One verdict from several (already Bonferroni-widened) ones: supported when all are,
    contradicted when any is (the claim is their conjunction), else inconclusive."""
    if statuses and all(s == SUPPORTED for s in statuses):
        return SUPPORTED
    if any(s == CONTRADICTED for s in statuses):
        return CONTRADICTED
    return INCONCLUSIVE


def fmt_num(x: float | None, digits: int = 3, unbounded: str = "inf") -> str:
    """A signed number; ``unbounded`` for an infinite end (stored as None in JSON)."""
    if x is None or math.isinf(x):
        return unbounded
    return f"{x:+.{digits}g}"


def json_safe(result: dict) -> dict:
    """A :func:`decide` result with unbounded ends as None (JSON has no inf)."""
    return {k: None if isinstance(v, float) and math.isinf(v) else v for k, v in result.items()}


def fmt_interval(result: dict, digits: int = 3) -> str:
    """``difference [low, high]`` of a :func:`decide` result (``-inf``/``+inf`` when fewer seeds
    than the test needs leave an end unbounded)."""
    lo = fmt_num(result["lo"], digits, "-inf")
    hi = fmt_num(result["hi"], digits, "+inf")
    return f"{fmt_num(result['mean'], digits)} [{lo}, {hi}]"
