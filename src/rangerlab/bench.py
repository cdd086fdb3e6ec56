"""Step-time benchmark: ``python -m rangerlab.bench``.

For each optimizer and parameter set (ResNet-18's parameter shapes; 2,000 tensors of 64x64) it
prints the median time of a step with fixed gradients, ns per parameter, the effective bandwidth
(the bytes the algorithm must move, over the time), the ratio to torch's fused Adam or SGD
measured in the same process on the same parameters and interleaved with it (median of
per-block ratios, so a noisy neighbour slows both sides of a pair alike), the optimizer state in
bytes per parameter, and the bytes allocated during one step. Peers that users would otherwise
pick (pytorch_optimizer, torch_optimizer, pytorch_ranger, timm.optim) are timed the same way
when they can be imported. The limit is the machine's copy bandwidth, measured first.

Telemetry: each preset also runs with ``telemetry=True`` (every step recorded, values left on the
device between reads, as in training), timed against the same optimizer with telemetry switched
off between blocks instead of against torch, so its ratio is the recording's overhead (goal: at
most 10% on ResNet-18).

Timing: a block is ``k = 6`` steps (one Lookahead cycle, so sync steps count at their real rate);
steps are timed in blocks, alternating between the optimizer and its torch reference. Each ratio
comes with a 95% interval for the median of its per-block ratios (``median_interval``), and a
goal is judged on that interval (``judge``): "met" when all of it is within the goal, "MISSED"
when all of it is past the goal, "inconclusive" when it spans the goal. The interval covers the
noise from block to block within the run, not the drift between runs minutes apart (5-10% on a
shared 2-core machine): rerun before trusting a verdict near its goal. A goal is judged only on a
stable timing: where the per-block ratios spread widely, the two halves of the run disagree, or
the load average exceeds the cores, the row says "unreliable" and why.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.profiler import ProfilerActivity, profile

from rangerlab import fused
from rangerlab.factory import create_optimizer, optimizer_info

BLOCK = 6


def resnet18_shapes() -> list[tuple[int, ...]]:
    """The parameter shapes of torchvision's ResNet-18 (11,689,512 floats), without torchvision."""
    shapes: list[tuple[int, ...]] = [(64, 3, 7, 7), (64,), (64,)]
    in_ch = 64
    for out_ch, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            first = in_ch if block == 0 else out_ch
            shapes += [(out_ch, first, 3, 3), (out_ch,), (out_ch,)]
            shapes += [(out_ch, out_ch, 3, 3), (out_ch,), (out_ch,)]
            if block == 0 and (stride != 1 or in_ch != out_ch):
                shapes += [(out_ch, in_ch, 1, 1), (out_ch,), (out_ch,)]
        in_ch = out_ch
    return shapes + [(1000, 512), (1000,)]


PARAM_SETS: dict[str, list[tuple[int, ...]]] = {
    "resnet18": resnet18_shapes(),
    "2000x4096": [(64, 64)] * 2000,
}

Factory = Callable[[list[torch.Tensor]], torch.optim.Optimizer]


@dataclass(frozen=True)
class Case:
    """One benchmarked optimizer: its factory, its torch reference, the bytes it must move."""

    name: str
    make: Factory
    reference: str  # "adam" or "sgd"
    bytes_per_param: float  # fp32: reads and writes of weights, gradients and state per step
    goal: float | None = None  # ratio goal on the ResNet-18 set (x1.5 on the small-tensor set)
    slow: bool = False  # a slower path shown for comparison: timed with fewer blocks
    goal_small: bool = True  # the goal (x1.5) applies on the small-tensor set too
    reference_label: str = ""  # the reference when it is not torch's optimizer ("vs" column)
    # timed against itself with switch(opt, False), its own blocks with switch(opt, True)
    switch: Callable[[torch.optim.Optimizer, bool], None] | None = None


ADAM_BYTES = 28.0  # read g, w, m, v; write w, m, v
SGD_BYTES = 20.0  # read g, w, v; write w, v
LOOKAHEAD_BYTES = 8.0 / BLOCK  # on a sync step: read and write the slow weights

TORCH = {
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True),
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, fused=True),
}


#: Telemetry's overhead goal: a recorded step against the same step unrecorded (ResNet-18).
TELEMETRY_GOAL = 1.10

#: rangerlab's optimizers by their registry names (`rangerlab.list_optimizers`): arguments,
#: torch reference, bytes moved per parameter, ratio goal.
OURS: list[tuple[str, dict, str, float, float | None]] = [
    ("adam", {"lr": 1e-3}, "adam", ADAM_BYTES, None),
    ("radam", {"lr": 1e-3}, "adam", ADAM_BYTES, 1.2),
    ("ranger", {}, "adam", ADAM_BYTES + LOOKAHEAD_BYTES, 1.5),
    ("ranger_lars", {}, "adam", ADAM_BYTES + LOOKAHEAD_BYTES, 2.2),
    ("sgd", {"lr": 0.1, "momentum": 0.9}, "sgd", SGD_BYTES, None),
    ("lars", {"lr": 0.1}, "sgd", SGD_BYTES, 1.6),
]


def _by_name(name: str, **kwargs) -> Factory:
    return lambda ps: create_optimizer(ps, name, **kwargs)


def _telemetry(opt: torch.optim.Optimizer, on: bool) -> None:
    for group in opt.param_groups:
        group["telemetry"] = on


def ours() -> list[Case]:
    """rangerlab's presets on their default (fused) path, with the issue's ratio goals."""
    cases = [
        Case(f"rangerlab.{optimizer_info(name).cls.__name__}", _by_name(name, **kw), *rest)
        for name, kw, *rest in OURS
    ]
    return [
        *cases,
        Case(
            "rangerlab.Ranger (reference path)",
            _by_name("ranger", foreach=True),
            "adam",
            ADAM_BYTES + LOOKAHEAD_BYTES,
            slow=True,
        ),
        # telemetry on every step, timed against the same optimizer with telemetry off
        *(
            Case(
                f"rangerlab.{optimizer_info(name).cls.__name__} (telemetry=True)",
                _by_name(name, telemetry=True, **kw),
                reference,
                nbytes,
                TELEMETRY_GOAL,
                goal_small=False,
                reference_label="itself, telemetry off",
                switch=_telemetry,
            )
            for name, kw, reference, nbytes, _ in OURS
        ),
        Case(
            "torch.optim.RAdam (foreach)",
            lambda ps: torch.optim.RAdam(ps, foreach=True),
            "adam",
            ADAM_BYTES,
            slow=True,
        ),
    ]


def peers() -> list[Case]:
    """The other libraries' versions, for those that import (each is optional)."""
    la = LOOKAHEAD_BYTES
    table = [
        ("pytorch_optimizer", "RAdam", {}, "adam", ADAM_BYTES),
        ("pytorch_optimizer", "Ranger", {}, "adam", ADAM_BYTES + la),
        ("pytorch_optimizer", "Lamb", {}, "adam", ADAM_BYTES),
        ("pytorch_optimizer", "LARS", {"lr": 0.1}, "sgd", SGD_BYTES),
        ("torch_optimizer", "RAdam", {}, "adam", ADAM_BYTES),
        ("torch_optimizer", "Ranger", {}, "adam", ADAM_BYTES + la),
        ("torch_optimizer", "Lamb", {}, "adam", ADAM_BYTES),
        ("pytorch_ranger", "Ranger", {}, "adam", ADAM_BYTES + la),
        ("timm.optim", "RAdam", {}, "adam", ADAM_BYTES),
        ("timm.optim", "Lars", {"lr": 0.1}, "sgd", SGD_BYTES),
    ]
    cases = []
    for module_name, attr, kwargs, reference, nbytes in table:
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except Exception:  # absent, or broken by a missing dependency (timm needs torchvision)
            continue
        cases.append(
            Case(
                f"{module_name}.{attr}",
                lambda ps, c=cls, kw=kwargs: c(ps, **kw),
                reference,
                nbytes,
                slow=True,
            )
        )
    return cases


def make_params(shapes: list[tuple[int, ...]], seed: int = 0) -> list[torch.Tensor]:
    """Parameters with fixed gradients (each call makes its own copy: some peers edit grads)."""
    gen = torch.Generator().manual_seed(seed)
    params = []
    for shape in shapes:
        p = torch.nn.Parameter(torch.randn(shape, generator=gen) * 0.05)
        p.grad = torch.randn(shape, generator=gen) * 1e-3
        params.append(p)
    return params


def _block(opt: torch.optim.Optimizer) -> float:
    start = time.perf_counter()
    for _ in range(BLOCK):
        opt.step()
    return (time.perf_counter() - start) / BLOCK


def paired_blocks(
    case: Case,
    params: list[torch.Tensor],
    reps: int,
    timer: Callable[[torch.optim.Optimizer], float] = _block,
) -> tuple[list[float], list[float], torch.optim.Optimizer]:
    """``reps`` block times of ``case`` and of its reference, alternating, and the optimizer.

    The pairs are counterbalanced: ``case`` goes first in even pairs, its reference in odd ones.

    Both step the same parameter tensors and gradients (``params``), and a case with a
    ``switch`` (telemetry on and off) is its own reference, state and all, so that where two
    copies of the memory happen to lie cannot favour one side in every block (an offset that no
    number of blocks averages away). What this does not remove: on the development machine, at
    2 threads, the unrecorded LARS step took 8.4 ms in some processes and 9.2 ms in others, so
    its telemetry row read 0.90-1.06 from run to run; single-threaded runs did not show it.
    """
    opt = case.make(params)
    if case.switch is None:
        ref = TORCH[case.reference](params)

        def block(mine: bool) -> float:
            return timer(opt if mine else ref)

    else:

        def block(mine: bool) -> float:
            case.switch(opt, mine)
            return timer(opt)

    block(True), block(False)  # warm-up: state is created, RAdam is past its first 6 steps
    mine, theirs = [], []
    for rep in range(reps):
        # counterbalanced (ABBA): which side goes first alternates, so a drift of the machine
        # within a pair, or what one side leaves in the caches for the next, favours neither
        if rep % 2 == 0:
            mine.append(block(True))
            theirs.append(block(False))
        else:
            theirs.append(block(False))
            mine.append(block(True))
    if case.switch is not None:
        case.switch(opt, True)  # what is reported about the optimizer is about the case
    return mine, theirs, opt


def time_pair(case: Case, shapes: list[tuple[int, ...]], reps: int) -> dict[str, float]:
    """Median step time of ``case`` and its ratio to its reference (``paired_blocks``)."""
    mine, theirs, opt = paired_blocks(case, make_params(shapes), reps)
    ratios = [m / t for m, t in zip(mine, theirs, strict=True)]
    return {
        "seconds": statistics.median(mine),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "state_bytes": state_bytes(opt),
        "step_alloc": step_allocation(opt),
    }


#: Coverage of the interval printed with each ratio and used to judge its goal.
CONFIDENCE = 0.95


def median_interval(
    values: list[float], confidence: float = CONFIDENCE
) -> tuple[float, float] | None:
    """Distribution-free confidence interval for the median of ``values`` (None if too few).

    With the values sorted, x_(1) <= ... <= x_(n), the interval is [x_(k), x_(n+1-k)] for the
    largest k with P(B <= k - 1) <= (1 - confidence) / 2, B ~ Binomial(n, 1/2): the median lies
    below x_(k) only if fewer than k values do, so the interval misses it with probability at
    most 1 - confidence, whatever the values' distribution, as long as they are independent
    (Conover, *Practical Nonparametric Statistics*, 3rd ed., section 3.2). For n = 30 it is
    [x_(10), x_(21)], a 95.7% interval. Fewer than 6 values admit no 95% interval: None.

    >>> median_interval([float(i) for i in range(1, 31)])
    (10.0, 21.0)
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n = len(values)
    tail, k, mass = (1 - confidence) / 2, 0, 0.0
    while k < n // 2:
        mass += math.comb(n, k) / 2**n  # P(B = k)
        if mass > tail:
            break
        k += 1  # P(B <= k - 1) <= tail: x_(k) is still a valid lower end
    if k == 0:
        return None
    ordered = sorted(values)
    return ordered[k - 1], ordered[n - k]


def judge(goal: float, ratios: list[float], why_unreliable: str = "") -> str:
    """The goal column for a ratio goal ``<= goal`` from the per-block ``ratios``.

    "met" when the median's interval (``median_interval``, printed beside the ratio) lies within
    the goal, "MISSED" when it lies past it, "inconclusive" when it holds the goal, "unreliable"
    (with ``why_unreliable``) when the timing itself cannot support a verdict.

    >>> judge(1.10, [1.02, 1.04, 1.05, 1.06, 1.03, 1.05, 1.04, 1.06])
    '<= 1.10 met'
    >>> judge(1.10, [1.07, 1.12, 1.09, 1.13, 1.08, 1.11, 1.10, 1.12])
    '<= 1.10 inconclusive'
    """
    if why_unreliable:
        return f"<= {goal:.2f} unreliable ({why_unreliable})"
    interval = median_interval(ratios)
    if interval is None:
        return f"<= {goal:.2f} inconclusive ({len(ratios)} blocks: too few for an interval)"
    lo, hi = interval
    if hi <= goal:
        return f"<= {goal:.2f} met"
    if lo > goal:
        return f"<= {goal:.2f} MISSED"
    return f"<= {goal:.2f} inconclusive"


def format_ratio(ratio: float, ratios: list[float]) -> str:
    """``ratio`` with its interval, as the tables print it: ``1.06 (1.04-1.08)``."""
    interval = median_interval(ratios)
    if interval is None:
        return f"{ratio:.2f}"
    return f"{ratio:.2f} ({interval[0]:.2f}-{interval[1]:.2f})"


#: A timing is unreliable when its per-block ratios spread by more than this (interquartile
#: range over median), or the medians of its two halves differ by more than this.
MAX_SPREAD = 0.25


def unreliable(ratios: list[float], load: float | None = None, cores: int | None = None) -> str:
    """Why the per-block ``ratios`` of one timing cannot support a verdict ("" if they can).

    On an oversubscribed machine torch's per-tensor parallel regions collapse at random, and a
    median of ratios can read 0.03 ("goal met") while measuring the neighbours. Three signs:
    a wide spread of the ratios, two halves of the run that disagree, and a load average above
    the number of cores.
    """
    reasons = []
    if len(ratios) >= 4:
        q1, _, q3 = statistics.quantiles(ratios, n=4)
        mid = statistics.median(ratios)
        if (q3 - q1) / mid > MAX_SPREAD:
            reasons.append(f"block ratios spread {100 * (q3 - q1) / mid:.0f}% of the median")
        half = len(ratios) // 2
        first, second = statistics.median(ratios[:half]), statistics.median(ratios[half:])
        if abs(first - second) / min(first, second) > MAX_SPREAD:
            reasons.append(f"the run's two halves give {first:.2f} and {second:.2f}")
    if load is not None and cores is not None and load > cores:
        reasons.append(f"load average {load:.1f} on {cores} cores")
    return "; ".join(reasons)


def _load_and_cores() -> tuple[float | None, int | None]:
    if not hasattr(os, "getloadavg"):
        return None, None
    return os.getloadavg()[0], os.cpu_count()


def state_bytes(opt: torch.optim.Optimizer) -> float:
    """Optimizer state per parameter, in bytes (step counters and scalars excluded)."""
    total = sum(
        v.numel() * v.element_size()
        for s in opt.state.values()
        for k, v in s.items()
        if isinstance(v, torch.Tensor) and k != "step" and v.dim() > 0
    )
    n = sum(p.numel() for g in opt.param_groups for p in g["params"])
    return total / n


def step_allocation(opt: torch.optim.Optimizer) -> int:
    """Bytes allocated by the ops of one step (torch profiler): bounds the peak extra memory."""
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        opt.step()
    return sum(max(e.cpu_memory_usage, 0) for e in prof.events())


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 for the block: the profiler's C++ side logs
    ``profiler_start``/``profiler_stop`` lines there, which would land between table rows."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def copy_bandwidth(numel: int, reps: int = 20) -> float:
    """The machine's copy bandwidth in GB/s (read + write) for a buffer of ``numel`` floats."""
    src, dst = torch.randn(numel), torch.empty(numel)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - start)
    return 8 * numel / statistics.median(times) / 1e9


def machine() -> str:
    """CPU model and thread count, for the table's header."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"{model}, {torch.get_num_threads()} threads, torch {torch.__version__}{load}"


def run(
    sets: list[str],
    reps: int,
    with_peers: bool,
    print_fn=print,
    only: list[str] | None = None,
) -> list[dict]:
    """Benchmark every case on every parameter set; print a markdown table; return the rows.

    ``only``: the cases whose name contains one of these strings (all cases when None).
    """
    cases = _only(ours() + (peers() if with_peers else []), only)
    if not cases:
        raise ValueError(f"only={only!r}: no benchmark case's name contains any of them")
    start = time.perf_counter()
    fused.available()
    print_fn(f"machine: {machine()}")
    print_fn(
        f"fused kernels: {fused.build_seconds():.1f} s compiling in this run (0: the cached "
        f"build was loaded), {time.perf_counter() - start:.1f} s to load"
    )
    rows, unreliable_rows = [], 0
    for set_name in sets:
        shapes = PARAM_SETS[set_name]
        n = sum(torch.Size(s).numel() for s in shapes)
        bandwidth = copy_bandwidth(n)
        print_fn(
            f"\n{set_name}: {len(shapes)} tensors, {n:,} parameters; "
            f"copy bandwidth {bandwidth:.1f} GB/s"
        )
        print_fn(
            "| optimizer | ms/step | ns/param | GB/s | ratio | vs | goal | state B/param "
            "| alloc/step |"
        )
        print_fn("|---|---|---|---|---|---|---|---|---|")
        for case in cases:
            r = time_pair(case, shapes, max(3, reps // 6) if case.slow else reps)
            goal = case.goal
            if goal is not None and set_name != "resnet18":
                goal = goal * 1.5 if case.goal_small else None
            verdict = ""
            why = unreliable(r["ratios"], *_load_and_cores())
            if goal is not None:
                verdict = judge(goal, r["ratios"], why)
                unreliable_rows += bool(why)
            ref = case.reference_label or (
                "torch Adam fused" if case.reference == "adam" else "torch SGD fused"
            )
            row = dict(
                set=set_name,
                name=case.name,
                goal=goal,
                verdict=verdict,
                interval=median_interval(r["ratios"]),
                unreliable=why,
                **r,
            )
            rows.append(row)
            print_fn(
                f"| {case.name} | {r['seconds'] * 1e3:.2f} | {r['seconds'] * 1e9 / n:.2f} "
                f"| {case.bytes_per_param * n / r['seconds'] / 1e9:.1f} "
                f"| {format_ratio(r['ratio'], r['ratios'])} "
                f"| {ref} | {verdict} | {r['state_bytes']:.0f} | {_size(r['step_alloc'])} |"
            )
    if unreliable_rows:
        print_fn(
            f"\n{unreliable_rows} goal(s) not judged: the timings were unstable (a busy machine?)."
            " Rerun on an idle machine, or with --threads 1."
        )
    return rows


def _only(cases: list[Case], only: list[str] | None) -> list[Case]:
    """The cases whose name contains one of ``only`` (all when None)."""
    if only is None:
        return cases
    return [case for case in cases if any(part in case.name for part in only)]


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:.1f} KiB"


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point; see ``python -m rangerlab.bench --help``."""
    parser = argparse.ArgumentParser(
        prog="python -m rangerlab.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cuda: the GPU benchmark (rangerlab.bench_cuda: Triton step, GPT-2 small shapes too)",
    )
    parser.add_argument(
        "--sets",
        nargs="+",
        choices=sorted({*PARAM_SETS, "gpt2-small"}),
        help="parameter sets (default: all of the device's)",
    )
    parser.add_argument("--reps", type=int, default=30, help="timed blocks per optimizer")
    parser.add_argument("--no-peers", action="store_true", help="skip the other libraries")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="TEXT",
        help="only the cases whose name contains one of these, e.g. --only telemetry",
    )
    parser.add_argument(
        "--threads", type=int, help="torch threads (default: torch's); 1 resists busy neighbours"
    )
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error(f"--reps must be positive, got {args.reps}")
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be positive, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device cuda: CUDA is not available on this machine")
        from . import bench_cuda

        sets = args.sets or list(bench_cuda.SETS)
        if args.only is not None:
            parser.error("--only: not with --device cuda")
        bench_cuda.run(sets, args.reps, not args.no_peers)
        return
    sets = args.sets or list(PARAM_SETS)
    unknown = set(sets) - set(PARAM_SETS)
    if unknown:
        parser.error(f"--sets {', '.join(sorted(unknown))}: only with --device cuda")
    if not _only(ours() + ([] if args.no_peers else peers()), args.only):
        parser.error(f"--only {' '.join(args.only)}: no benchmark case's name contains any of them")
    run(sets, args.reps, not args.no_peers, only=args.only)


if __name__ == "__main__":
    main()
