"""The verdict rule: a difference counts only beyond twice its standard error."""

import pytest

from rangerlab.lab import stats


def test_summary_and_fmt():
    assert stats.summary([1.0, 3.0]) == {"mean": 2.0, "std": pytest.approx(2**0.5), "n": 2}
    assert stats.fmt([1.0, 3.0]) == "2 ± 1.4"
    assert stats.fmt([2.5]) == "2.5"


def test_compare_needs_a_difference_beyond_two_standard_errors():
    assert stats.compare([10.0, 10.2], [1.0, 1.1]) == 1
    assert stats.compare([1.0, 1.1], [10.0, 10.2]) == -1
    # means differ by 1, SE = sqrt(2/2 + 2/2)... = 1.41 per side: not distinguishable
    assert stats.compare([0.0, 2.0], [1.0, 3.0]) == 0
    assert stats.compare([1.0], [5.0]) == 0  # one seed is never enough
    assert stats.compare([3.0, 3.0], [3.0, 3.0]) == 0
    assert stats.compare([3.0, 3.0], [2.0, 2.0]) == 1  # deterministic difference counts


def test_compare_to_a_threshold():
    assert stats.compare_to([2.0, 2.1, 1.9], 1.0) == 1
    assert stats.compare_to([0.5, 0.6], 1.0) == -1
    assert stats.compare_to([0.0, 2.0], 1.0) == 0


def test_tally_and_verdict():
    assert stats.tally([1, 1, 0, -1]) == 1
    assert stats.tally([1, 0, 0, 0]) == 0  # one win of four is not a majority
    assert stats.tally([-1, -1, 1]) == -1
    v = stats.verdict(-1, "why")
    assert v == {"status": "contradicted", "detail": "why", "rule": stats.RULE}
