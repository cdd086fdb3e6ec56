"""Telemetry's cost kernel by kernel: each C++ kernel with and without its stats, in one process.

    python scripts/bench_telemetry_kernels.py [--threads 1] [--reps 30] [--in-cache]

On ResNet-18's shapes (fixed gradients and moments), every variant is timed with ``stats`` and
without, the two orders alternating, the variants interleaved; printed is the median of the
per-pair ratios (recorded / unrecorded) with its 95% interval (`rangerlab.bench.median_interval`),
and beside it each unrecorded kernel's time over plain Adam's unrecorded time in the same round
(what GC, the sync or the two passes cost the kernel itself).
It isolates the kernels from the step's Python (which `python -m rangerlab.bench` includes), so a
change to one loop can be measured where whole-step timings drown it. The variants: the Adam
family's one-pass step without and with Gradient Centralization and the Lookahead sync (Adam,
RAdam, Ranger), the two passes of the trust-ratio step (Ranger-LARS), and SGD's step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rangerlab.bench import median_interval, resnet18_shapes
from rangerlab.fused import _build, new_stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--calls", type=int, default=3, help="kernel calls per timing")
    parser.add_argument(
        "--in-cache",
        action="store_true",
        help="8 tensors of 32 x 576 (GC rows of ResNet-18's layer 1) that stay in L2 cache, "
        "300 calls per timing: the loops' arithmetic without waits for memory",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ops = _build.load()
    gen = torch.Generator().manual_seed(0)
    shapes = resnet18_shapes()
    if args.in_cache:
        shapes, args.calls = [(32, 576)] * 8, 300
    w = [torch.randn(s, generator=gen) * 0.05 for s in shapes]
    g = [torch.randn(s, generator=gen) * 1e-3 for s in shapes]
    m = [torch.randn(s, generator=gen) * 1e-4 for s in shapes]
    v = [torch.rand(s, generator=gen) * 1e-6 + 1e-7 for s in shapes]
    slow = [x.clone() for x in w]
    n = len(w)
    a, d, adaptive, ones = [1e-3] * n, [0.9] * n, [1] * n, [1.0] * n

    def adam(gc: bool, sync: bool):
        return lambda st: ops.adam_step(
            w, g, m, v, slow if sync else [], a, d, adaptive, 1e-6, 0.9, 0.999, 1e-8, 0.0,
            False, gc, sync, 0.5, st,
        )  # fmt: skip

    variants = {
        "adam": adam(False, False),
        "adam+gc": adam(True, False),
        "adam+sync": adam(False, True),
        "adam+gc+sync (Ranger's sync step)": adam(True, True),
        "trust pass 1 +gc (Ranger-LARS)": lambda st: ops.adam_trust_norms(
            w, g, m, v, a, d, adaptive, 0.9, 0.999, 1e-8, 0.0, False, True, st
        ),
        "trust pass 2 +sync (Ranger-LARS)": lambda st: ops.adam_trust_apply(
            w, m, v, slow, a, d, adaptive, ones, 1e-6, 1e-8, 0.0, False, True, 0.5, st
        ),
        "sgd": lambda st: ops.sgd_step(w, g, m, [0] * n, [], 1e-6, 0.9, 0.0, 0.0, False, False, st),
    }
    ratios: dict[str, list[float]] = {name: [] for name in variants}
    to_adam: dict[str, list[float]] = {name: [] for name in variants}
    for rep in range(args.reps):
        unrecorded = {}
        for name, kernel in variants.items():
            pair = {}
            for on in (True, False) if rep % 2 else (False, True):
                stats = new_stats(n) if on else None
                start = time.perf_counter()
                for _ in range(args.calls):
                    kernel(stats)
                pair[on] = time.perf_counter() - start
            ratios[name].append(pair[True] / pair[False])
            unrecorded[name] = pair[False]
        for name, seconds in unrecorded.items():
            to_adam[name].append(seconds / unrecorded["adam"])
    where = "8 x (32, 576), in cache" if args.in_cache else "ResNet-18 shapes"
    print(f"{args.threads} thread(s), {args.reps} pairs of {args.calls} calls, {where}")
    print("| kernel | recorded / unrecorded (95% interval) | unrecorded / adam's unrecorded |")
    print("|---|---|---|")
    for name, values in ratios.items():
        lo, hi = median_interval(values)
        cost = f"{statistics.median(to_adam[name]):.2f}"
        print(f"| {name} | {statistics.median(values):.3f} ({lo:.3f}-{hi:.3f}) | {cost} |")


if __name__ == "__main__":
    main()
