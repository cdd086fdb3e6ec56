"""Train with FSDP2 and a rangerlab optimizer on several processes, with resumable checkpoints.

    torchrun --nproc_per_node 2 examples/distributed_training.py --optimizer ranger_lars
    torchrun --nproc_per_node 3 examples/distributed_training.py --resume --steps 300

Every process holds a shard of each layer (``fully_shard``: parameters become DTensors); the
optimizer steps the shards, and layer-wise trust ratios (LARS, Ranger-LARS) use the norm of the
whole layer. The global batch of each step is the same whatever the number of processes, so the
run follows the single-process one (to float32 rounding). Every ``--save-every`` steps the model
and optimizer state (Lookahead's slow weights included) are written with
torch.distributed.checkpoint; ``--resume`` continues from there, on any number of processes.

The task is synthetic (fit a fixed random "teacher" network): nothing is downloaded. CPU with
the gloo backend by default; with ``--cuda`` one GPU per process and nccl.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import rangerlab

OPTIMIZERS = {
    "ranger": lambda params, lr: rangerlab.Ranger(params, lr=lr, weight_decay=1e-4),
    "ranger_lars": lambda params, lr: rangerlab.RangerLARS(params, lr=lr, weight_decay=1e-4),
    "lars": lambda params, lr: rangerlab.LARS(params, lr=100 * lr, weight_decay=1e-4),
    "adamw": lambda params, lr: rangerlab.Adam(
        params, lr=lr, weight_decay=0.01, decoupled_weight_decay=True
    ),
    "lookahead_adamw": lambda params, lr: rangerlab.Lookahead(
        torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    ),
}
FEATURES = 32


def mlp(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(FEATURES, 128), nn.GELU(), nn.Linear(128, 128), nn.GELU(), nn.Linear(128, 1)
    )


def global_batch(step: int, size: int, teacher: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch of ``step``, identical on every process and for any number of processes."""
    x = torch.randn(size, FEATURES, generator=torch.Generator().manual_seed(step))
    with torch.no_grad():
        return x, teacher(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="ranger_lars")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=240, help="global, over all processes")
    parser.add_argument("--checkpoint", default="checkpoints/distributed_training")
    parser.add_argument("--save-every", type=int, default=100)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--cuda", action="store_true", help="one GPU per process, nccl")
    args = parser.parse_args()

    dist.init_process_group("nccl" if args.cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.batch_size % world:
        raise SystemExit(f"--batch-size {args.batch_size} must divide by {world} processes")
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if args.cuda else None
    if device is not None:
        torch.cuda.set_device(device)
    mesh = init_device_mesh(device.type if device else "cpu", (world,))

    teacher = mlp(seed=1)
    model = mlp(seed=0)
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = OPTIMIZERS[args.optimizer](model.parameters(), args.lr)

    start = 0
    if args.resume:
        model_state, optim_state = get_state_dict(model, opt)
        state = {"model": model_state, "optim": optim_state, "progress": {"step": 0}}
        dcp.load(state, checkpoint_id=args.checkpoint)
        set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
        start = state["progress"]["step"]

    per_rank = args.batch_size // world
    mine = slice(rank * per_rank, (rank + 1) * per_rank)
    for step in range(start, args.steps):
        x, y = global_batch(step, args.batch_size, teacher)
        x, y = x[mine], y[mine]
        if device is not None:
            x, y = x.to(device), y.to(device)
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == start or (step + 1) % 20 == 0 or step + 1 == args.steps:
            loss = loss.detach()
            dist.all_reduce(loss)  # a sum: gloo has no average
            if rank == 0:
                print(f"step {step + 1:4d}  loss {loss.item() / world:.5f}", flush=True)
        if (step + 1) % args.save_every == 0 or step + 1 == args.steps:
            model_state, optim_state = get_state_dict(model, opt)
            state = {"model": model_state, "optim": optim_state, "progress": {"step": step + 1}}
            dcp.save(state, checkpoint_id=args.checkpoint)
    if rank == 0:
        print(f"{args.optimizer} on {world} processes: checkpoint in {args.checkpoint}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
