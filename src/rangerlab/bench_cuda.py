"""GPU step-time benchmark: ``python -m rangerlab.bench --device cuda``.

The same cases as the CPU benchmark (`rangerlab.bench`), on CUDA tensors: rangerlab's
presets on their default path (the fused Triton step), the reference path, torch's foreach RAdam
and the peers that import, each timed in blocks of 6 steps (one Lookahead cycle) with CUDA
events, alternating with torch's fused Adam or SGD in the same process on the same parameters
(the ``telemetry=True`` rows: with the same optimizer unrecorded); ``ratio`` is the median of
the per-block ratios, with its 95% interval, and a goal is judged on that interval
(`rangerlab.bench.judge`: met, MISSED or inconclusive). Parameter sets: ResNet-18's shapes
(11.7M), GPT-2 small's (124M) and 2,000 tensors of 64x64. ``floor`` is the time the bytes the
algorithm must move take at the GPU's measured copy bandwidth. The goals are issue 12's (1.5 for
every goal on the small-tensor set).
"""

from __future__ import annotations

import statistics

import torch

from . import bench
from .bench import ADAM_BYTES, BLOCK, SGD_BYTES, Case

#: Ratio goals on an H100/H200-class GPU (issue 12), by case name.
GOALS = {
    "rangerlab.RAdam": 1.1,
    "rangerlab.Ranger": 1.3,
    "rangerlab.RangerLARS": 2.0,
    "rangerlab.LARS": 1.5,
}
SMALL_SET_GOAL = 1.5


def gpt2_small_shapes() -> list[tuple[int, ...]]:
    """The parameter shapes of GPT-2 small (124,439,808 floats; the LM head is tied to wte)."""
    d, ff = 768, 3072
    shapes: list[tuple[int, ...]] = [(50257, d), (1024, d)]
    for _ in range(12):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,)]
        shapes += [(d,), (d,), (d, ff), (ff,), (ff, d), (d,)]
    return shapes + [(d,), (d,)]


SETS: dict[str, list[tuple[int, ...]]] = {
    "resnet18": bench.resnet18_shapes(),
    "gpt2-small": gpt2_small_shapes(),
    "2000x4096": [(64, 64)] * 2000,
}


def make_params(shapes: list[tuple[int, ...]], seed: int = 0) -> list[torch.Tensor]:
    """CUDA parameters with fixed gradients (drawn on the GPU: 124M on the CPU would be slow)."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    params = []
    for shape in shapes:
        p = torch.nn.Parameter(torch.randn(shape, generator=gen, device="cuda") * 0.05)
        p.grad = torch.randn(shape, generator=gen, device="cuda") * 1e-3
        params.append(p)
    return params


def _block(opt: torch.optim.Optimizer) -> float:
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(BLOCK):
        opt.step()
    stop.record()
    stop.synchronize()
    return start.elapsed_time(stop) / 1e3 / BLOCK


def time_pair(case: Case, shapes: list[tuple[int, ...]], reps: int) -> dict[str, float]:
    """Median step time of ``case`` and its ratio to its reference (`rangerlab.bench.paired_blocks`,
    timed with CUDA events)."""
    mine, theirs, opt = bench.paired_blocks(case, make_params(shapes), reps, _block)
    del opt
    torch.cuda.empty_cache()
    ratios = [m / t for m, t in zip(mine, theirs, strict=True)]
    return {
        "seconds": statistics.median(mine),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
    }


def copy_bandwidth(numel: int, reps: int = 20) -> float:
    """Device-to-device copy bandwidth in GB/s (bytes read plus bytes written)."""
    src = torch.empty(numel, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        dst.copy_(src)
    stop.record()
    stop.synchronize()
    return 8 * numel * reps / (start.elapsed_time(stop) / 1e3) / 1e9


def run(sets: list[str], reps: int, with_peers: bool, print_fn=print) -> list[dict]:
    """Benchmark every case on every set on the GPU; print markdown tables; return the rows."""
    if not torch.cuda.is_available():
        raise RuntimeError("--device cuda: CUDA is not available")
    import triton

    print_fn(
        f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
        f"triton {triton.__version__}"
    )
    cases = bench.ours() + (bench.peers() if with_peers else [])
    rows = []
    for set_name in sets:
        shapes = SETS[set_name]
        n = sum(torch.Size(s).numel() for s in shapes)
        bandwidth = copy_bandwidth(min(n, 1 << 26))
        print_fn(
            f"\n{set_name}: {len(shapes)} tensors, {n:,} parameters; copy bandwidth "
            f"{bandwidth:.0f} GB/s; floor {ADAM_BYTES * n / bandwidth / 1e3:.0f} us (Adam, "
            f"{ADAM_BYTES:.0f} B/param), {SGD_BYTES * n / bandwidth / 1e3:.0f} us (SGD)"
        )
        print_fn("| optimizer | us/step | x floor | ratio | vs | goal |")
        print_fn("|---|---|---|---|---|---|")
        for case in cases:
            r = time_pair(case, shapes, max(3, reps // 6) if case.slow else reps)
            goal = GOALS.get(case.name)
            if goal is not None and set_name == "2000x4096":
                goal = SMALL_SET_GOAL
            verdict = "" if goal is None else bench.judge(goal, r["ratios"])
            floor = case.bytes_per_param * n / (bandwidth * 1e9)
            ref = case.reference_label or (
                "torch Adam fused" if case.reference == "adam" else "torch SGD fused"
            )
            rows.append(dict(set=set_name, name=case.name, goal=goal, verdict=verdict, **r))
            print_fn(
                f"| {case.name} | {r['seconds'] * 1e6:.0f} | {r['seconds'] / floor:.2f} "
                f"| {bench.format_ratio(r['ratio'], r['ratios'])} | {ref} | {verdict} |"
            )
    return rows
