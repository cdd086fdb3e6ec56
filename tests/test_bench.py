"""The benchmark's own rules: when a timing is too unstable to judge a goal, and quiet output."""

from __future__ import annotations

import math
import random
import statistics

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from rangerlab import bench


def test_stable_ratios_are_judged():
    assert bench.unreliable([1.10, 1.12, 1.08, 1.11, 1.09, 1.10, 1.13, 1.07]) == ""
    assert bench.unreliable([1.1, 1.2], load=1.0, cores=2) == ""


def test_unstable_timings_are_reported_with_the_reason():
    # What an oversubscribed machine printed: collapsing reference timings, ratios all over.
    collapsed = [0.03, 1.1, 0.05, 0.9, 0.02, 1.2, 0.04, 1.0]
    assert "spread" in bench.unreliable(collapsed)
    drifting = [1.0, 1.02, 0.98, 1.01, 1.6, 1.62, 1.58, 1.61]  # a neighbour started midway
    assert "halves" in bench.unreliable(drifting)
    assert "load average 7.5 on 2 cores" in bench.unreliable([1.0] * 8, load=7.5, cores=2)


def test_unreliable_rows_claim_no_goal(monkeypatch):
    monkeypatch.setitem(bench.PARAM_SETS, "tiny", [(8, 4), (3,)])
    monkeypatch.setattr(bench, "_load_and_cores", lambda: (9.0, 2))
    lines = []
    rows = bench.run(["tiny"], reps=2, with_peers=False, print_fn=lines.append)
    judged = [line for line in lines if "<= " in line]
    assert judged and all("unreliable (" in line and " met" not in line for line in judged)
    assert all(row["unreliable"] for row in rows)
    assert any("not judged" in line for line in lines)


def test_no_profiler_lines_between_table_rows(capfd):
    bench.step_allocation(torch.optim.Adam(bench.make_params([(8, 4)])))
    out, err = capfd.readouterr()
    assert "profiler" not in out + err


def test_median_interval_is_the_binomial_order_statistic_interval():
    values = [float(i) for i in range(1, 31)]
    assert bench.median_interval(values) == (10.0, 21.0)  # n = 30: x_(10), x_(21), 95.7%
    assert bench.median_interval(values[::-1]) == (10.0, 21.0)  # order of the blocks is irrelevant
    assert bench.median_interval([float(i) for i in range(1, 21)]) == (6.0, 15.0)
    assert bench.median_interval([float(i) for i in range(1, 11)]) == (2.0, 9.0)
    assert bench.median_interval([1.0] * 6) == (1.0, 1.0)
    assert bench.median_interval([1.0, 2.0, 3.0, 4.0, 5.0]) is None  # no 95% interval from 5
    with pytest.raises(ValueError, match="confidence"):
        bench.median_interval(values, confidence=1.0)


def test_median_interval_covers_the_median_at_its_stated_rate():
    """Simulated: 4,000 runs of 30 exponential draws (median ln 2); the exact coverage at n = 30
    is 95.7%, so a narrower interval (too optimistic) or a wider one (too timid) both fail."""
    gen = random.Random(7)
    hits = 0
    for _ in range(4000):
        lo, hi = bench.median_interval([gen.expovariate(1.0) for _ in range(30)])
        hits += lo <= math.log(2) <= hi
    assert 0.945 <= hits / 4000 <= 0.968


@given(st.lists(st.floats(0.1, 10.0), min_size=6, max_size=80))
def test_median_interval_holds_the_sample_median(values):
    lo, hi = bench.median_interval(values)
    assert lo <= statistics.median(values) <= hi
    assert lo in values and hi in values


def test_goals_are_judged_on_the_interval():
    below = [1.02, 1.04, 1.05, 1.06, 1.03, 1.05, 1.04, 1.06]
    assert bench.judge(1.10, below) == "<= 1.10 met"
    assert bench.judge(1.10, [r + 0.1 for r in below]) == "<= 1.10 MISSED"
    # the median (1.095) is within the goal, but the interval holds it: no verdict either way
    straddling = [1.07, 1.12, 1.09, 1.13, 1.08, 1.11, 1.10, 1.09]
    assert bench.median_interval(straddling) == (1.07, 1.13)
    assert bench.judge(1.10, straddling) == "<= 1.10 inconclusive"
    assert "too few" in bench.judge(1.10, [1.0, 1.0])
    assert bench.judge(1.10, below, "load average 9.0 on 2 cores") == (
        "<= 1.10 unreliable (load average 9.0 on 2 cores)"
    )


def test_rows_print_the_interval_and_the_verdict(monkeypatch):
    monkeypatch.setitem(bench.PARAM_SETS, "tiny", [(8, 4), (3,)])
    monkeypatch.setattr(bench, "_load_and_cores", lambda: (0.0, 2))
    monkeypatch.setattr(bench, "unreliable", lambda *a: "")
    lines = []
    rows = bench.run(["tiny"], reps=8, with_peers=False, print_fn=lines.append)
    for row in rows:
        line = next(x for x in lines if x.startswith(f"| {row['name']} |"))
        if len(row["ratios"]) < 6:  # a slow path's 3 blocks: no interval to print
            assert row["interval"] is None and f"| {row['ratio']:.2f} |" in line
            continue
        lo, hi = row["interval"]
        assert lo <= row["ratio"] <= hi
        assert f"| {row['ratio']:.2f} ({lo:.2f}-{hi:.2f}) |" in line
        if row["goal"] is not None:
            assert row["verdict"] == bench.judge(row["goal"], row["ratios"]) != ""
            assert row["verdict"] in line


def test_pairs_share_their_parameters_and_telemetry_is_its_own_reference():
    """Separate copies of the memory on each side biased ratios by where they lay: the torch
    reference steps the same tensors, and the telemetry rows switch one optimizer on and off."""
    params = bench.make_params([(8, 4), (3,)])
    cases = {case.name: case for case in bench.ours()}
    seen = []

    def timer(opt):
        seen.append((opt, [g.get("telemetry") for g in opt.param_groups]))
        return 1.0

    mine, theirs, opt = bench.paired_blocks(
        cases["rangerlab.Ranger (telemetry=True)"], params, 3, timer
    )
    assert len(mine) == len(theirs) == 3
    assert all(o is opt for o, _ in seen)
    # warm-up, then 3 pairs, counterbalanced: on first, then off first, then on first
    assert [flags for _, flags in seen] == [[True], [False]] * 2 + [[False], [True]] + [
        [True],
        [False],
    ]
    assert opt.param_groups[0]["telemetry"] is True  # left on for the report
    seen.clear()
    bench.paired_blocks(cases["rangerlab.Ranger"], params, 2, timer)
    ours, ref = seen[0][0], seen[1][0]
    assert isinstance(ref, torch.optim.Adam) and ours is not ref
    for o in (ours, ref):
        assert [id(p) for p in o.param_groups[0]["params"]] == [id(p) for p in params]


def test_only_runs_the_cases_it_names(monkeypatch):
    monkeypatch.setitem(bench.PARAM_SETS, "tiny", [(8, 4), (3,)])
    rows = bench.run(["tiny"], reps=2, with_peers=False, print_fn=lambda _: None,
                     only=["telemetry"])  # fmt: skip
    assert rows and all("telemetry" in row["name"] for row in rows)
    assert len(rows) == sum("telemetry" in case.name for case in bench.ours())
    with pytest.raises(ValueError, match="no benchmark case"):
        bench.run(["tiny"], reps=2, with_peers=False, only=["nothing like it"])
    with pytest.raises(SystemExit):
        bench.main(["--only", "nothing like it", "--sets", "resnet18", "--no-peers"])
