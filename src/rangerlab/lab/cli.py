"""The ``rangerlab`` command: ``run`` the experiments, ``list`` them, re-render a ``report``."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

EPILOG = "Example: rangerlab run --quick --out rangerlab-report  (then open report.html)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rangerlab",
        description="Test the lecture's claims about modern optimizers on real data.",
        epilog=EPILOG,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run experiments and write a report", epilog=EPILOG)
    mode = run.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        dest="mode",
        action="store_const",
        const="quick",
        help="a preview of every experiment, under 5 minutes on 2 CPU cores (the default)",
    )
    mode.add_argument(
        "--full",
        dest="mode",
        action="store_const",
        const="full",
        help="the quotable run: more seeds and steps (under 30 minutes on 2 CPU cores)",
    )
    mode.add_argument(
        "--tiny", dest="mode", action="store_const", const="tiny", help=argparse.SUPPRESS
    )  # the test suite's smoke configuration
    run.set_defaults(mode="quick")
    run.add_argument(
        "--out",
        type=Path,
        default=Path("rangerlab-report"),
        help="output folder (default: rangerlab-report)",
    )
    run.add_argument(
        "--experiments",
        default="all",
        help="comma-separated experiment ids (see `rangerlab list`), or 'all'",
    )
    run.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="test seeds per arm for every experiment (default: each experiment's own, 6-16)",
    )
    run.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="worker processes running trials in parallel (default: 2, or 1 on one core); "
        "results do not depend on it",
    )
    run.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads per trial (default 1: fastest for these small models)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    sub.add_parser("list", help="list the experiments")
    rep = sub.add_parser("report", help="re-render report.html and figures from results.json")
    rep.add_argument("dir", type=Path, help="a folder written by `rangerlab run`")
    rep.add_argument(
        "--summary", action="store_true", help="also print the verdict table as Markdown"
    )
    return parser


def _experiment_ids(spec: str) -> list[str]:
    from .experiments import EXPERIMENTS

    if spec.strip() == "all":
        return list(EXPERIMENTS)
    ids = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [i for i in ids if i not in EXPERIMENTS]
    if unknown or not ids:
        raise ValueError(
            f"--experiments: unknown experiment(s) {', '.join(unknown) or repr(spec)}; "
            f"choose from {', '.join(EXPERIMENTS)}"
        )
    return list(dict.fromkeys(ids))


def _missing_extras() -> list[str]:
    """The lab's dependencies (the ``lab`` extra) that are not installed."""
    names = ("matplotlib", "sklearn", "numpy", "tqdm")
    return [n for n in names if importlib.util.find_spec(n) is None]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rangerlab`` console script; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    missing = _missing_extras()
    if missing:
        parser.error(
            f"the lab needs {', '.join(missing)}: install the lab extra, "
            f"pip install 'rangerlab[lab]' (or pip install -e '.[lab]' in a checkout)"
        )
    if args.command == "list":
        from .experiments import EXPERIMENTS

        for exp_id, exp in EXPERIMENTS.items():
            print(f"{exp_id:16} {exp.description}")
        return 0
    if args.command == "report":
        from .report import render, summary_markdown

        try:
            path = render(args.dir)
        except (FileNotFoundError, ValueError) as err:
            parser.error(str(err))
        print(f"report written to {path}")
        if args.summary:
            print(summary_markdown(json.loads((args.dir / "results.json").read_text())))
        return 0

    from . import runner

    try:
        ids = _experiment_ids(args.experiments)
    except ValueError as err:
        parser.error(str(err))
    if args.seeds is not None and args.seeds < 2:
        parser.error(f"--seeds must be at least 2 (paired intervals need two), got {args.seeds}")
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    try:
        runner.check_out_dir(args.out)
    except OSError as err:
        parser.error(f"--out {args.out} is not a writable folder: {err}")
    try:
        runner.run_experiments(
            ids,
            args.mode,
            args.out,
            threads=args.threads,
            jobs=args.jobs,
            n_seeds=args.seeds,
            progress=not args.no_progress,
        )
    except KeyboardInterrupt:
        print(
            "\ninterrupted: nothing was written (an earlier report, if any, is untouched)",
            file=sys.stderr,
        )
        return 130
    print(f"report written to {args.out / 'report.html'}")
    return 0
