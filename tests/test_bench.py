"""The benchmark's own rules: when a timing is too unstable to judge a goal, and quiet output."""

from __future__ import annotations

import torch

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
