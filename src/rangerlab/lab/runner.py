"""Runs experiments and writes the results, figures and report into an output folder atomically.

Everything is built in a hidden staging folder inside the output folder and moved into place only
when every experiment has finished, ``report.html`` last; an interrupted run (Ctrl-C) removes the
staging folder, so the output folder never holds a half-written report.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import rangerlab

from . import report
from .experiments import EXPERIMENTS

MODES = ("tiny", "quick", "full")
#: Seeds per mode unless ``--seeds`` says otherwise.
DEFAULT_SEEDS = {"tiny": 2, "quick": 2, "full": 3}
RESULTS = "results.json"


def environment(threads: int, seeds: list[int], mode: str) -> dict[str, Any]:
    """What the numbers depend on: versions, CPU, threads, seeds and mode."""
    return {
        "rangerlab": rangerlab.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "seeds": seeds,
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


def run_experiments(
    ids: list[str], mode: str, seeds: list[int], out: Path, threads: int, progress: bool = True
) -> dict[str, Any]:
    """Run the experiments ``ids`` in ``mode`` and write ``out/results.json``, the figures and
    ``out/report.html``. Returns the results."""
    saved = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    results: dict[str, Any] = {"environment": environment(threads, seeds, mode), "experiments": {}}
    stage = Path(tempfile.mkdtemp(dir=out, prefix=".rangerlab-partial-"))
    try:
        for exp_id in ids:
            module = EXPERIMENTS[exp_id]
            cfg = module.CONFIGS[mode]
            start = time.perf_counter()
            with tqdm(desc=f"{exp_id:>16}", unit="run", disable=not progress, leave=True) as bar:
                outcome = module.run(cfg, seeds, bar)
            results["experiments"][exp_id] = {
                "id": exp_id,
                "title": module.TITLE,
                "claim": module.CLAIM,
                "config": cfg,
                "seconds": round(time.perf_counter() - start, 2),
                **outcome,
            }
        results["environment"]["seconds"] = round(
            sum(e["seconds"] for e in results["experiments"].values()), 2
        )
        _write_json(stage / RESULTS, results)
        report.render(stage)
        _publish(stage, out)
    finally:
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
