"""Step time on FSDP2-style Shard(0) DTensors: 2 gloo processes, 1 thread each, ResNet-18 shapes.

    python scripts/bench_fsdp2.py [--world 2] [--reps 10]

Each rank holds its rows of every parameter and gradient (``distribute_tensor(..., [Shard(0)])``,
as ``fully_shard`` lays them out). Prints rank 0's median step time for rangerlab's Ranger and
Ranger-LARS on the fused path (the default) and on the reference path (``fused=False``: what
every DTensor step took before), with ``telemetry=True`` (every step recorded: on the fused path
the shards' sums are combined by one all_gather per bucket; a recorded step used to take the
reference path), and for torch's foreach Adam on the same shards. The telemetry cases read
``opt.telemetry()`` after every block of 6 steps, inside the timed block: the step itself does
not wait for the all_gather that combines the ranks' sums (`rangerlab.fused.sharded.GatheredStats`),
the read does, and its cost is counted.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor

import rangerlab
from rangerlab.bench import resnet18_shapes

CASES = {
    "rangerlab.Ranger (fused)": lambda p: rangerlab.Ranger(p),
    "rangerlab.Ranger (reference, before)": lambda p: rangerlab.Ranger(p, fused=False),
    "rangerlab.RangerLARS (fused)": lambda p: rangerlab.RangerLARS(p),
    "rangerlab.RangerLARS (reference, before)": lambda p: rangerlab.RangerLARS(p, fused=False),
    "rangerlab.Ranger (fused, telemetry=True)": lambda p: rangerlab.Ranger(p, telemetry=True),
    "rangerlab.Ranger (reference, telemetry=True: before)": lambda p: rangerlab.Ranger(
        p, fused=False, telemetry=True
    ),
    "rangerlab.RangerLARS (fused, telemetry=True)": lambda p: rangerlab.RangerLARS(
        p, telemetry=True
    ),
    "torch.optim.Adam (foreach)": lambda p: torch.optim.Adam(p, foreach=True),
}


def shards(mesh) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    params = []
    for shape in resnet18_shapes():
        full = torch.randn(shape, generator=gen) * 0.05
        p = torch.nn.Parameter(distribute_tensor(full, mesh, [Shard(0)]))
        p.grad = distribute_tensor(torch.randn(shape, generator=gen) * 1e-3, mesh, [Shard(0)])
        params.append(p)
    return params


def worker(rank: int, world: int, port: int, reps: int) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,))
    for name, make in CASES.items():
        opt = make(shards(mesh))
        for _ in range(6):  # state made, RAdam past its first steps, one Lookahead cycle
            opt.step()
        times = []
        for _ in range(reps):
            dist.barrier()
            start = time.perf_counter()
            for _ in range(6):
                opt.step()
            if "telemetry" in name:  # read as a logger would: the gathered sums are waited for
                opt.telemetry()
            times.append((time.perf_counter() - start) / 6)
        if rank == 0:
            print(f"| {name} | {statistics.median(times) * 1e3:.1f} |", flush=True)
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    print(f"{args.world} gloo processes, 1 thread each, ResNet-18 shapes as Shard(0) DTensors")
    print("| optimizer | ms/step (rank 0, median) |\n|---|---|")
    mp.spawn(worker, args=(args.world, port, args.reps), nprocs=args.world)


if __name__ == "__main__":
    main()
