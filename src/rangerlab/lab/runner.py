"""The one runner: tunes, runs every arm x seed trial, computes intervals and verdicts, and writes
the results, figures and report into an output folder atomically.

Per experiment: (1) when it declares a :class:`~rangerlab.lab.protocol.Tuning`, every arm trains
at every rate of its grid with the tuning seeds (1000, 1001, ...) and is scored on the validation
split; each arm keeps its best rate. (2) Every arm trains with the test seeds (0, 1, ...) at its
rate and is scored on the test split. (3) Each declared comparison turns the seeds' metrics into
paired differences, and :func:`rangerlab.lab.stats.decide` gives the interval and the verdict.

Trials are independent and seeded, so they may run in worker processes (``jobs``) with the same
results. Everything is written into a hidden staging folder inside the output folder and moved
into place only when every experiment has finished, ``report.html`` last; an interrupted run
(Ctrl-C) removes the staging folder, so the output folder never holds a half-written report.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import rangerlab

from . import report, stats
from .experiments import EXPERIMENTS
from .protocol import Experiment

MODES = ("tiny", "quick", "full")
RESULTS = "results.json"
TUNING_SEED = 1000  # tuning seeds start here: never the same as a test seed
Task = tuple[str, dict[str, Any], str, int]


def environment(threads: int, jobs: int, mode: str) -> dict[str, Any]:
    """What the numbers depend on: versions, CPU, threads, worker processes and mode."""
    return {
        "rangerlab": rangerlab.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads per trial": threads,
        "worker processes": jobs,
        "mode": mode,
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def check_out_dir(out: Path) -> None:
    """Create ``out`` if needed and prove it is writable; raise ``OSError`` saying why if not."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out, prefix=".rangerlab-probe-"):
        pass


def _init_worker(threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def _work(task: Task) -> dict[str, Any]:
    exp_id, cfg, arm, seed = task
    return EXPERIMENTS[exp_id].trial(cfg, arm, seed)


class Executor:
    """Runs trials in this process (``jobs=1``) or in ``jobs`` spawned worker processes."""

    def __init__(self, jobs: int, threads: int):
        self.pool = None
        if jobs > 1:
            ctx = multiprocessing.get_context("spawn")
            self.pool = ctx.Pool(jobs, initializer=_init_worker, initargs=(threads,))

    def map(self, exp: Experiment, tasks: list[Task]) -> Iterator[dict[str, Any]]:
        """Each task's metrics, in order. Workers look the experiment up by id (only the id
        crosses the process boundary); in this process ``exp`` itself runs."""
        if self.pool is None:
            return (exp.trial(cfg, arm, seed) for _, cfg, arm, seed in tasks)
        return self.pool.imap(_work, tasks)

    def close(self, interrupted: bool) -> None:
        """Stop the workers (at once when interrupted)."""
        if self.pool is not None:
            (self.pool.terminate if interrupted else self.pool.close)()
            self.pool.join()


def _collect(ex: Executor, exp: Experiment, tasks: list[Task], bar) -> list[dict[str, Any]]:
    done = []
    for metrics in ex.map(exp, tasks):
        done.append(metrics)
        bar.update()
    return done


def run_one(exp: Experiment, mode: str, n_seeds: int | None, ex: Executor, bar) -> dict[str, Any]:
    """Tune, run and judge one experiment; returns its JSON-ready result."""
    cfg = exp.configs[mode]
    arms = exp.arms(cfg)
    seeds = list(range(n_seeds if n_seeds is not None else exp.seeds[mode]))
    tune = exp.tuning
    t_seeds = [TUNING_SEED + i for i in range(tune.seeds[mode])] if tune else []
    grids = {arm: tune.grid(cfg, arm) for arm in arms} if tune else {}
    bar.reset(total=sum(len(g) for g in grids.values()) * len(t_seeds) + len(arms) * len(seeds))
    tuning = _tune(exp, cfg, arms, grids, t_seeds, ex, bar) if tune else {}
    tasks = [
        (exp.id, {**cfg, "split": "test", **({"lr": tuning[arm]["lr"]} if tune else {})}, arm, s)
        for arm in arms
        for s in seeds
    ]
    found = iter(_collect(ex, exp, tasks, bar))
    runs = {arm: [next(found) for _ in seeds] for arm in arms}
    comparisons = judge(exp, cfg, runs, len(seeds))
    voting = [c for c in comparisons if c["in_verdict"]]
    status = stats.combine([c["status"] for c in voting]) if voting else stats.ILLUSTRATION
    needed = stats.seeds_needed(max(len(voting), 1))
    return {
        "id": exp.id,
        "title": exp.title,
        "claim": exp.claim,
        "claim_zh": exp.claim_zh,
        "config": cfg,
        "seeds": seeds,
        "tuning_seeds": t_seeds,
        "setup": exp.setup(cfg),
        "shows": exp.shows,
        "cannot_show": exp.cannot_show,
        "metrics": exp.metrics,
        "labels": {arm: exp.label(arm) for arm in arms},
        "tuning": tuning,
        "runs": runs,
        "comparisons": comparisons,
        "verdict": {"status": status, "detail": _detail(voting), "rule": stats.RULE},
        "power": {
            "seeds": len(seeds),
            "seeds_needed": needed,
            "provisional": bool(voting) and (len(seeds) < needed or mode != "full"),
        },
        "extra": exp.extra(cfg) if exp.extra else {"tables": [], "data": {}},
    }


def _tune(
    exp: Experiment,
    cfg: dict[str, Any],
    arms: list[str],
    grids: dict[str, list[float]],
    t_seeds: list[int],
    ex: Executor,
    bar,
) -> dict[str, Any]:
    """Score every arm's grid on the validation split, growing a grid past its end while the
    best rate sits there (see :class:`~rangerlab.lab.protocol.Tuning`); returns per arm the
    rates, their mean validation scores, the chosen rate and whether it is still at an end."""
    tune = exp.tuning
    scores: dict[str, dict[float, float]] = {arm: {} for arm in arms}
    pending = {arm: list(grids[arm]) for arm in arms}
    for round_ in range(tune.extend + 1):
        tasks = [
            (exp.id, {**cfg, "split": "val", "lr": lr}, arm, s)
            for arm in arms
            for lr in pending[arm]
            for s in t_seeds
        ]
        if round_ > 0:
            bar.total += len(tasks)
            bar.refresh()
        found = iter(_collect(ex, exp, tasks, bar))
        for arm in arms:
            for lr in pending[arm]:
                scores[arm][lr] = stats.mean([next(found)[tune.metric] for _ in t_seeds])
        pending = {}
        for arm in arms:
            lrs = sorted(scores[arm])
            best = max(range(len(lrs)), key=lambda i: tune.direction * scores[arm][lrs[i]])
            step = lrs[1] / lrs[0]
            extra = (
                [lrs[0] / step] if best == 0 else [lrs[-1] * step] if best == len(lrs) - 1 else []
            )
            pending[arm] = extra if round_ < tune.extend else []
        if not any(pending.values()):
            break
    out = {}
    for arm in arms:
        lrs = sorted(scores[arm])
        best = max(range(len(lrs)), key=lambda i: tune.direction * scores[arm][lrs[i]])
        out[arm] = {
            "grid": lrs,
            "score": [scores[arm][lr] for lr in lrs],
            "lr": lrs[best],
            "edge": best in (0, len(lrs) - 1),
            "added": len(lrs) - len(grids[arm]),
        }
    return out


def judge(
    exp: Experiment, cfg: dict[str, Any], runs: dict[str, list[dict]], n: int
) -> list[dict[str, Any]]:
    """Every declared comparison's paired differences, interval and status. Comparisons that
    vote share a Bonferroni-widened level; secondary ones get plain 95% intervals."""
    declared = exp.comparisons(cfg)
    m = sum(c.in_verdict for c in declared)
    out = []
    for c in declared:
        level = 1 - stats.ALPHA / m if c.in_verdict else 1 - stats.ALPHA
        d = [float(c.effect({arm: rs[i] for arm, rs in runs.items()})) for i in range(n)]
        result = stats.decide(d, c.direction, c.threshold, level)
        out.append(
            {
                "name": c.name,
                "unit": c.unit,
                "direction": c.direction,
                "threshold": c.threshold,
                "in_verdict": c.in_verdict,
                "differences": d,
                **stats.json_safe(result),
            }
        )
    return out


def _detail(voting: list[dict[str, Any]]) -> str:
    if not voting:
        return "An illustration: no comparison decides a claim here."
    parts = []
    for c in voting:
        side = ">" if c["direction"] > 0 else "<"
        parts.append(
            f"{c['name']}: {stats.fmt_interval(c)} {c['unit']} ({c['level']:.1%} interval; the "
            f"claim needs {side} {c['threshold']:g}) -> {c['status']}"
        )
    return "; ".join(parts) + "."


def run_experiments(
    ids: list[str],
    mode: str,
    out: Path,
    *,
    threads: int = 1,
    jobs: int = 1,
    n_seeds: int | None = None,
    progress: bool = True,
    run: Callable[..., dict[str, Any]] = run_one,
) -> dict[str, Any]:
    """Run the experiments ``ids`` in ``mode`` (``n_seeds`` test seeds each, default the
    experiment's own for the mode) and write ``out/results.json``, the figures and
    ``out/report.html``. Returns the results."""
    out.mkdir(parents=True, exist_ok=True)
    saved = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    results: dict[str, Any] = {"environment": environment(threads, jobs, mode), "experiments": {}}
    stage = Path(tempfile.mkdtemp(dir=out, prefix=".rangerlab-partial-"))
    ex = Executor(jobs, threads)
    interrupted = True
    try:
        for exp_id in ids:
            start = time.perf_counter()
            with tqdm(desc=f"{exp_id:>16}", unit="run", disable=not progress, leave=True) as bar:
                outcome = run(EXPERIMENTS[exp_id], mode, n_seeds, ex, bar)
            outcome["seconds"] = round(time.perf_counter() - start, 2)
            results["experiments"][exp_id] = outcome
        interrupted = False
        results["environment"]["seconds"] = round(
            sum(e["seconds"] for e in results["experiments"].values()), 2
        )
        _write_json(stage / RESULTS, results)
        try:
            report.render(stage)
        except Exception:
            # keep the numbers of a long run whose drawing failed; `rangerlab report` can redraw
            shutil.copy(stage / RESULTS, out / f"{RESULTS}.unrendered")
            raise
        _publish(stage, out)
    finally:
        ex.close(interrupted)
        shutil.rmtree(stage, ignore_errors=True)
        torch.set_num_threads(saved[0])  # leave the caller's process as it was
        torch.use_deterministic_algorithms(saved[1])
    return results


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, allow_nan=False) + "\n", encoding="utf-8")


def _publish(stage: Path, out: Path) -> None:
    """Move the staged figures, then results.json, then report.html into ``out`` (report last,
    so a report that exists always has its figures and numbers beside it)."""
    (out / report.REPORT).unlink(missing_ok=True)
    figures = out / report.FIGURES
    if figures.exists():
        shutil.rmtree(figures)
    os.replace(stage / report.FIGURES, figures)
    os.replace(stage / RESULTS, out / RESULTS)
    os.replace(stage / report.REPORT, out / report.REPORT)
