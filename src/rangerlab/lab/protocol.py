"""What an experiment is: a declaration the runner executes, never a script of its own.

An experiment names the lecture's claim (quoted), its arms, the metrics a trial reports, the
comparisons that decide the claim (each with its direction and threshold), an optional tuning
protocol, and one function ``trial(config, arm, seed) -> metrics``. The runner
(:mod:`rangerlab.lab.runner`) owns everything else: the arm x seed loop, tuning on the validation
split, progress bars, confidence intervals, verdicts and tables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: A trial's result: scalar metrics by name, plus optional curves (lists) for the figures.
Metrics = dict[str, Any]
#: One seed's metrics for every arm: ``{arm: metrics}``.
SeedMetrics = dict[str, Metrics]


@dataclass(frozen=True)
class Comparison:
    """One paired comparison: a per-seed effect computed from that seed's arms, and the claim
    about it (above ``threshold`` for ``direction=+1``, below for ``-1``).

    Attributes:
        name: what the effect is, in words (a table row).
        effect: ``{arm: metrics}`` of one seed -> the effect for that seed.
        direction: +1 or -1.
        threshold: 0, or the stated minimal effect.
        unit: the effect's unit, for the tables.
        in_verdict: False for a secondary comparison reported with its interval but not voting.
    """

    name: str
    effect: Callable[[SeedMetrics], float]
    direction: int
    threshold: float = 0.0
    unit: str = ""
    in_verdict: bool = True


def difference(
    a: str,
    b: str,
    metric: str,
    direction: int,
    *,
    unit: str = "",
    in_verdict: bool = True,
    threshold: float = 0.0,
    name: str | None = None,
) -> Comparison:
    """The common comparison: ``metric(a) - metric(b)`` per seed."""
    return Comparison(
        name or f"{metric}: {a} - {b}",
        lambda m: m[a][metric] - m[b][metric],
        direction,
        threshold,
        unit,
        in_verdict,
    )


@dataclass(frozen=True)
class Tuning:
    """Learning rates chosen per arm on the validation split, with one budget for every arm.

    The runner trains every ``(arm, lr)`` of ``grid(config, arm)`` (ascending, evenly spaced on
    a log scale) with ``seeds[mode]`` tuning seeds (disjoint from the test seeds) and scores
    ``metric`` on the validation split. While an arm's best rate is at an end of its grid, the
    grid grows by one more rate beyond that end, at most ``extend`` times: the same rule and
    budget for every arm. Each arm then runs its test seeds at its best rate (``config["lr"]``).
    """

    grid: Callable[[dict[str, Any], str], list[float]]
    metric: str
    direction: int  # +1: larger is better
    seeds: dict[str, int]
    extend: int = 2


@dataclass(frozen=True)
class Experiment:
    """A declared experiment (see the module docstring).

    ``trial(config, arm, seed)`` gets the mode's config plus ``split`` (``"val"`` while tuning,
    ``"test"`` after) and ``lr`` (the tuned rate, when the experiment tunes). ``extra(config)``
    measures what is not an arm x seed comparison (a side table); it runs once, in the main
    process, and returns ``{"tables": [...], "data": {...}}``. ``tables(result)`` derives extra
    tables from a finished result (the report calls it, so it needs only ``results.json``).
    """

    id: str
    title: str
    description: str
    claim: str
    claim_zh: str
    arms: Callable[[dict[str, Any]], list[str]]
    metrics: dict[str, str]
    comparisons: Callable[[dict[str, Any]], list[Comparison]]
    trial: Callable[[dict[str, Any], str, int], Metrics]
    configs: dict[str, dict[str, Any]]
    seeds: dict[str, int]
    setup: Callable[[dict[str, Any]], str]
    shows: str
    cannot_show: str
    plot: Callable[[dict[str, Any], Path], list[str]]
    tuning: Tuning | None = None
    extra: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    tables: Callable[[dict[str, Any]], list[dict[str, Any]]] | None = None
    labels: dict[str, str] = field(default_factory=dict)

    def label(self, arm: str) -> str:
        """The human-readable name of ``arm``."""
        return self.labels.get(arm, arm)
