"""The verdict rule: exact sign-flip intervals of paired differences, and its false-positive rate
under no true difference (continuous, discrete, tied and zero-spread samples)."""

import itertools
import math

import numpy as np
import pytest

from rangerlab.lab import stats


def test_sign_flip_p_exact_values():
    assert stats.sign_flip_p([1.0] * 6) == pytest.approx(2 / 64)
    assert stats.sign_flip_p([1.0] * 5) == pytest.approx(2 / 32)
    assert stats.sign_flip_p([0.0] * 6) == 1.0  # no difference at all
    # 1,2,3 flipped: sums 6 (x2), 4, 2, 0 ... |sum| >= 6 only for the all-same signs
    assert stats.sign_flip_p([1.0, 2.0, 3.0]) == pytest.approx(2 / 8)


def test_fewer_than_six_seeds_can_never_exclude_zero():
    assert stats.seeds_needed(1) == 6
    assert stats.seeds_needed(2) == 7  # Bonferroni: 2.5% each
    assert stats.seeds_needed(3) == 7  # 2/128 <= 0.05/3
    assert stats.seeds_needed(4) == 8
    r = stats.decide([0.1, 0.1, 0.1, 0.1, 0.1], +1)
    assert (r["lo"], r["hi"], r["status"]) == (-math.inf, math.inf, stats.INCONCLUSIVE)


def test_zero_spread_is_not_certainty_below_six_seeds_and_exact_above():
    # A t-interval would be [0.01, 0.01] here and call it significant at any n >= 2.
    assert stats.decide([0.01] * 3, +1)["status"] == stats.INCONCLUSIVE
    r = stats.decide([0.01] * 6, +1)
    assert r["status"] == stats.SUPPORTED and r["p"] == pytest.approx(2 / 64)
    assert r["lo"] > 0 and r["hi"] >= 0.01


def test_interval_contains_the_mean_and_decides_by_side():
    d = [0.02, 0.03, 0.01, 0.04, 0.025, 0.03, 0.02, 0.035]
    r = stats.decide(d, +1)
    assert r["lo"] < np.mean(d) < r["hi"] and r["lo"] > 0
    assert r["status"] == stats.SUPPORTED
    assert stats.decide(d, -1)["status"] == stats.CONTRADICTED
    assert stats.decide(d, +1, threshold=0.5)["status"] == stats.CONTRADICTED  # below the minimum
    mixed = [0.02, -0.03, 0.01, -0.04, 0.025, -0.01, 0.0, 0.005]
    assert stats.decide(mixed, +1)["status"] == stats.INCONCLUSIVE


def test_interval_is_the_set_of_shifts_the_test_keeps():
    d = [0.3, -0.1, 0.5, 0.2, 0.4, 0.1, 0.6, 0.0]
    lo, hi = stats.interval(d)
    for inside in np.linspace(lo + 1e-6, hi - 1e-6, 7):
        assert stats.sign_flip_p(d, inside) > 0.05 or abs(inside - lo) < 1e-3
    assert stats.sign_flip_p(d, lo - 1e-3) <= 0.05
    assert stats.sign_flip_p(d, hi + 1e-3) <= 0.05


def test_combine_and_formatting():
    s, c, i = stats.SUPPORTED, stats.CONTRADICTED, stats.INCONCLUSIVE
    assert stats.combine([s, s]) == s
    assert stats.combine([s, i]) == i
    assert stats.combine([s, c]) == c
    assert stats.fmt([1.0, 3.0]) == "2 ± 1.4"
    r = {"mean": 0.0125, "lo": None, "hi": 0.5}
    assert stats.fmt_interval(r) == "+0.0125 [-inf, +0.5]"
    with pytest.raises(ValueError, match="direction"):
        stats.decide([1.0, 2.0], 0)


def _fpr(samples, decide) -> float:
    return float(np.mean([decide(d) != stats.INCONCLUSIVE for d in samples]))


def _rule(d):
    return stats.decide(d, +1)["status"]


def _exact_fpr(values, probs, n, rule) -> float:
    """The exact false-positive rate of ``rule`` for n i.i.d. differences from a discrete
    symmetric distribution (every outcome enumerated with its probability)."""
    total = 0.0
    for combo in itertools.combinations_with_replacement(range(len(values)), n):
        counts = np.bincount(combo, minlength=len(values))
        ways = math.factorial(n) / np.prod([math.factorial(c) for c in counts])
        if rule([values[k] for k in combo]) != stats.INCONCLUSIVE:
            total += ways * np.prod([p**c for p, c in zip(probs, counts, strict=True)])
    return total


def _naive_t_rule(d):
    """The rule a t-interval gives when zero spread counts as certainty (what the lab must
    not do): significant when |t| > t_0.975 or when the spread is zero and the mean is not."""
    crit = {5: 2.776, 6: 2.571, 7: 2.447}[len(d)]
    m, s = np.mean(d), np.std(d, ddof=1)
    if s == 0:
        return stats.INCONCLUSIVE if m == 0 else stats.SUPPORTED
    return stats.SUPPORTED if abs(m) / (s / math.sqrt(len(d))) > crit else stats.INCONCLUSIVE


@pytest.mark.parametrize("n", [5, 6, 7])
def test_exact_false_positive_rate_with_ties_and_two_point_differences(n):
    r = 1 / 360  # accuracy moves in steps of one test image
    tied = _exact_fpr([-r, 0.0, r], [0.1, 0.8, 0.1], n, _rule)
    two_point = _exact_fpr([-r, r], [0.5, 0.5], n, _rule)
    assert tied <= 0.05 and two_point <= 0.05
    if n == 5:  # the harness has teeth: the naive t rule fails it (2/32 = 6.25% > 5%)
        assert _exact_fpr([-r, r], [0.5, 0.5], n, _naive_t_rule) > 0.05


def test_simulated_false_positive_rate_under_no_difference():
    rng = np.random.default_rng(7)
    reps = 800

    def accuracy_pairs(n):  # both arms draw test accuracy the same way: discrete, often tied
        p = 0.95 + 0.004 * rng.standard_normal((2, n))
        acc = rng.binomial(360, np.clip(p, 0, 1)) / 360
        return acc[0] - acc[1]

    scenarios = {
        "normal n=6": [rng.standard_normal(6) for _ in range(reps)],
        "normal n=8": [rng.standard_normal(8) for _ in range(reps)],
        "accuracy n=8": [accuracy_pairs(8) for _ in range(reps)],
        "heavy-tailed n=10": [rng.standard_t(2, 10) for _ in range(reps)],
        "zero spread n=8": [np.zeros(8) for _ in range(50)],
    }
    slack = 2 * math.sqrt(0.05 * 0.95 / reps)  # two Monte Carlo standard errors
    for name, samples in scenarios.items():
        rate = _fpr(samples, _rule)
        assert rate <= 0.05 + slack, (name, rate)
    # two comparisons combined into one verdict (Bonferroni), 7 seeds
    level = 1 - 0.05 / 2

    def combined(pair):
        return stats.combine([stats.decide(d, +1, level=level)["status"] for d in pair])

    pairs = [(rng.standard_normal(7), rng.standard_normal(7)) for _ in range(reps)]
    assert _fpr(pairs, combined) <= 0.05 + slack
