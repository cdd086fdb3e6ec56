"""One rank of the multi-process checks, started by ``test_distributed.py`` (not a test module).

``python _worker.py SCENARIO RANK WORLD_SIZE PORT OUT_DIR``: joins a gloo process group on
127.0.0.1, runs the scenario's checks and, on rank 0, writes the results to
``OUT_DIR/SCENARIO.pt`` as plain tensors. The test compares them with :func:`reference`, which
it runs in its own process: same seed, whole global batches, no process group.
"""

from __future__ import annotations

import gc
import os
import sys
import warnings
from collections.abc import Callable
from functools import partial

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
    set_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, Shard
from torch.nn.parallel import DistributedDataParallel

import rangerlab
from rangerlab import fused
from rangerlab.transforms import add_decayed_weights, scale_by_adam, scale_by_trust_ratio

STEPS = 8
GLOBAL_BATCH = 12  # divisible by 1, 2 and 3 processes

#: Every optimizer, with settings where each of its parts (trust ratio, GC, decay, Lookahead
#: syncs at steps 3 and 6, RAdam's rectified steps from step 6) changes the trajectory.
OPTIMIZERS: dict[str, Callable] = {
    "SGD": partial(rangerlab.SGD, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    "SGD+GC": partial(rangerlab.SGD, lr=0.05, momentum=0.9, gc=True),
    "Adam": partial(rangerlab.Adam, lr=0.01, weight_decay=0.01),
    "AdamW": partial(rangerlab.Adam, lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
    "RAdam": partial(rangerlab.RAdam, lr=0.01, weight_decay=0.01, gc=True),
    "LARS": partial(rangerlab.LARS, lr=1.0, trust_coefficient=0.02, weight_decay=1e-3, gc=True),
    "LARC": partial(
        rangerlab.LARS, lr=0.5, trust_coefficient=0.02, weight_decay=1e-3, nesterov=True, clip=True
    ),
    "LARS foreach=True": partial(
        rangerlab.LARS, lr=1.0, trust_coefficient=0.02, weight_decay=1e-3, foreach=True
    ),
    "Ranger": partial(rangerlab.Ranger, lr=0.01, weight_decay=1e-3, k=3),
    "Ranger fused=False": partial(rangerlab.Ranger, lr=0.01, weight_decay=1e-3, k=3, fused=False),
    "RangerLARS": partial(
        rangerlab.RangerLARS, lr=0.01, weight_decay=1e-3, k=3, max_weight_norm=1.0
    ),
    "LAMB": lambda p: rangerlab.Chain(
        p,
        [scale_by_adam(), add_decayed_weights(), scale_by_trust_ratio()],
        lr=0.01,
        weight_decay=0.01,
        max_weight_norm=None,
    ),
    "Lookahead(torch AdamW)": lambda p: rangerlab.Lookahead(
        torch.optim.AdamW(p, lr=0.01, weight_decay=0.1), k=3, alpha=0.5
    ),
    "Lookahead(torch SGD foreach=True)": lambda p: rangerlab.Lookahead(
        torch.optim.SGD(p, lr=0.05, momentum=0.9, foreach=True), k=3, alpha=0.5
    ),
}


def build_model() -> nn.Module:
    """A conv layer (3-D weight, 5 output channels: uneven shards) and two linear layers."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(2, 5, 3), nn.ReLU(), nn.Flatten(), nn.Linear(30, 7), nn.Tanh(), nn.Linear(7, 3)
    )


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of ``step``: the same on every rank and in the reference."""
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(GLOBAL_BATCH, 2, 8, generator=g), torch.randn(GLOBAL_BATCH, 3, generator=g)


def train(model: nn.Module, opt, steps: range, rank: int = 0, world: int = 1) -> None:
    """Plain data-parallel training on this rank's slice of each global batch (MSE, mean)."""
    per_rank = GLOBAL_BATCH // world
    for step in steps:
        x, y = batch(step)
        mine = slice(rank * per_rank, (rank + 1) * per_rank)
        x, y = x[mine], y[mine]
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def full_params(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters as whole plain tensors (gathered from shards under FSDP2)."""
    return {
        name: (p.full_tensor() if isinstance(p, DTensor) else p).detach().clone()
        for name, p in model.named_parameters()
    }


def slow_params(model: nn.Module, opt) -> dict[str, torch.Tensor]:
    """The parameters as seen inside ``opt.slow_weights()`` (Lookahead's slow weights)."""
    with opt.slow_weights():
        return full_params(model)


def reference(name: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One process, whole batches, STEPS steps: the parameters and the slow weights that every
    distributed run must reproduce."""
    model = build_model()
    opt = OPTIMIZERS[name](model.parameters())
    train(model, opt, range(STEPS))
    return full_params(model), slow_params(model, opt)


def fsdp_model(world: int, shard_dim: int = 0) -> nn.Module:
    """``build_model`` under FSDP2: every layer's parameters become DTensor shards.

    FSDP2 shards dim 0 by default, unevenly where the size does not divide; ``shard_dim=1``
    shards the weights whose dim 1 divides evenly (FSDP2 needs that) along dim 1 instead, which
    splits Gradient Centralization's mean across processes.
    """
    mesh = init_device_mesh("cpu", (world,))
    model = build_model()

    def placement(p: nn.Parameter) -> Shard:
        even = p.dim() > shard_dim and p.shape[shard_dim] % world == 0
        return Shard(shard_dim if even else 0)

    for layer in model:
        if any(True for _ in layer.parameters()):
            fully_shard(layer, mesh=mesh, shard_placement_fn=placement)
    return fully_shard(model, mesh=mesh)


def fsdp_path(opt) -> str:
    """Which step a rangerlab optimizer's first group takes on the FSDP2 shards."""
    if not isinstance(opt, rangerlab.Chain):
        return "not a Chain"
    group = opt.param_groups[0]
    return type(fused.select(group, opt.chain_for(group), group["params"])).__name__


def state_kinds(opt) -> list[str]:
    """Type names of the tensors in an optimizer's per-parameter state (step counters aside)."""
    return sorted(
        {
            type(value).__name__
            for entry in opt.state.values()
            for key, value in entry.items()
            if isinstance(value, torch.Tensor) and key != "step"
        }
    )


def scenario_two(rank: int, world: int, out: str) -> dict:
    """Every optimizer under DDP and FSDP2; checkpoints; the non-finite guard; ZeRO."""
    results = {}
    for name, make in OPTIMIZERS.items():
        ddp = DistributedDataParallel(build_model())
        train(ddp, make(ddp.parameters()), range(STEPS), rank, world)
        model = fsdp_model(world)
        opt = make(model.parameters())
        train(model, opt, range(STEPS), rank, world)
        results[name] = {
            "ddp": full_params(ddp.module),
            "fsdp": full_params(model),
            "fsdp_state_kinds": state_kinds(opt),
            "fsdp_slow": slow_params(model, opt),
            "fsdp_path": fsdp_path(opt),
        }
    results["telemetry"] = {
        name: telemetry_reads(name, fsdp_model(world), rank, world) for name in TELEMETRY
    }
    results["telemetry_interval"] = {
        name: telemetry_interval(name, fsdp_model(world), rank, world)
        for name in TELEMETRY_INTERVAL
    }
    results["telemetry_reference_path"] = {
        name: telemetry_reads(name, fsdp_model(world), rank, world)
        for name in TELEMETRY_REFERENCE_PATH
    }
    results["checkpoint"] = checkpoint_roundtrip(rank, world, out)
    results["skip_nonfinite"] = skip_nonfinite(rank, world)
    results["zero"] = zero_checks(rank, world, out)
    return results


#: Telemetry on FSDP2 shards: every part that records (trust ratios, LARC's clip, GC's removed
#: mean, RAdam's rectifier and adaptive factor, Lookahead's distance at syncs, both decays).
TELEMETRY = ("SGD+GC", "AdamW", "RAdam", "LARS", "LARC", "Ranger", "RangerLARS")


def telemetry_reads(name: str, model: nn.Module, rank: int = 0, world: int = 1) -> dict:
    """STEPS steps of ``name`` with ``telemetry=True``, read after every step, and how many
    buckets recorded through the probes (the reference path) instead of a fused kernel."""
    opt = OPTIMIZERS[name](model.parameters(), telemetry=True)
    real, probed = rangerlab.telemetry.probed, []

    def counting(*args):
        probed.append(1)
        return real(*args)

    rangerlab.telemetry.probed = counting
    try:
        reads = []
        for step in range(STEPS):
            train(model, opt, range(step, step + 1), rank, world)
            reads.append(opt.telemetry())
    finally:
        rangerlab.telemetry.probed = real
    return {"reads": reads, "probed": len(probed)}


#: Telemetry on the reference path (the probes' norms of DTensors, read as plain numbers).
TELEMETRY_REFERENCE_PATH = ("LARS foreach=True", "Ranger fused=False")

#: Read once, after all the steps, on rank 0 alone (as a logger on rank 0 does).
TELEMETRY_INTERVAL = ("Ranger", "RangerLARS", "LARC")


def telemetry_interval(name: str, model: nn.Module, rank: int, world: int) -> dict | None:
    """STEPS steps of ``name`` with ``telemetry=True`` and one read at the end, on rank 0 only:
    the ranks' sums, gathered without waiting in each step, are combined at that read."""
    opt = OPTIMIZERS[name](model.parameters(), telemetry=True)
    train(model, opt, range(STEPS), rank, world)
    return opt.telemetry() if rank == 0 else None


def skip_nonfinite(rank: int, world: int) -> dict:
    """An inf in one rank's gradient shard only: every rank must skip the step, or none."""
    model = fsdp_model(world)
    opt = rangerlab.Ranger(model.parameters(), lr=0.01, k=2, skip_nonfinite=True)
    train(model, opt, range(3), rank, world)
    before = full_params(model)
    x, y = batch(3)
    opt.zero_grad()
    nn.functional.mse_loss(model(x), y).backward()
    if rank == world - 1:
        next(model.parameters()).grad.to_local().view(-1)[0] = float("inf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        opt.step()
    skipped = [None] * world
    dist.all_gather_object(skipped, opt.skipped_steps)
    steps = {float(s["step"]) for s in opt.state.values()}
    return {
        "before": before,
        "after": full_params(model),
        "skipped_per_rank": skipped,
        "steps": sorted(steps),
        "lookahead_step": opt.param_groups[0]["lookahead_step"],
    }


#: Unsharded state dicts of whole tensors (on rank 0 only when saving).
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)
CHECKPOINTED = ("Ranger", "RangerLARS", "Lookahead(torch AdamW)", "LARS")
HALF = STEPS // 2


def checkpoint_roundtrip(rank: int, world: int, out: str) -> dict:
    """Save after HALF steps with torch.distributed.checkpoint, reload into fresh objects, go on.

    Returns, per optimizer, the uninterrupted and the resumed parameters after STEPS steps.
    The checkpoints stay in ``out`` for the 3-process scenario.
    """
    results = {}
    for name in CHECKPOINTED:
        model = fsdp_model(world)
        opt = OPTIMIZERS[name](model.parameters())
        train(model, opt, range(HALF), rank, world)
        path = os.path.join(out, "ckpt", name)
        dcp.save(
            {
                "model": get_model_state_dict(model),
                "optim": get_optimizer_state_dict(model, opt),
            },
            checkpoint_id=path,
        )
        torch.save(opt.state_dict(), f"{path}.rank{rank}.pt")  # the wrong way to reshard
        full = get_state_dict(model, opt, options=FULL)  # whole tensors, on rank 0 only
        if rank == 0:
            torch.save({"model": full[0], "optim": full[1]}, f"{path}.full.pt")
        train(model, opt, range(HALF, STEPS), rank, world)
        resumed = fsdp_model(world)
        resumed_opt = OPTIMIZERS[name](resumed.parameters())
        load_checkpoint(resumed, resumed_opt, path)
        train(resumed, resumed_opt, range(HALF, STEPS), rank, world)
        results[name] = {"uninterrupted": full_params(model), "resumed": full_params(resumed)}
    return results


def load_checkpoint(model: nn.Module, opt, path: str) -> None:
    """The documented way to resume: fresh state dicts to fill, dcp.load, then set both."""
    state = {
        "model": get_model_state_dict(model),
        "optim": get_optimizer_state_dict(model, opt),
    }
    dcp.load(state, checkpoint_id=path)
    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, opt, state["optim"])


def scenario_three(rank: int, world: int, out: str) -> dict:
    """Load what the 2-process run saved into ``world`` processes and finish training; run the
    trust-ratio and GC optimizers on this world size's (uneven) shards."""
    results = {}
    for name in CHECKPOINTED:
        model = fsdp_model(world)
        opt = OPTIMIZERS[name](model.parameters())
        load_checkpoint(model, opt, os.path.join(out, "ckpt", name))
        train(model, opt, range(HALF, STEPS), rank, world)
        results[name] = {"resumed": full_params(model)}
        model = fsdp_model(world)
        opt = OPTIMIZERS[name](model.parameters())
        full = torch.load(os.path.join(out, "ckpt", f"{name}.full.pt"), weights_only=True)
        set_state_dict(
            model,
            opt,
            model_state_dict=full["model"],
            optim_state_dict=full["optim"],
            options=FULL,
        )
        train(model, opt, range(HALF, STEPS), rank, world)
        results[f"{name}, full state dict"] = {"resumed": full_params(model)}
    results["telemetry"] = {
        name: telemetry_reads(name, fsdp_model(world), rank, world)
        for name in ("LARS", "RangerLARS", "Ranger")
    }
    results["misfits"] = misfit_errors(rank, world, out)
    for key, (name, shard_dim) in RESHARDED.items():
        model = fsdp_model(world, shard_dim)
        train(model, OPTIMIZERS[name](model.parameters()), range(STEPS), rank, world)
        results[key] = {"fsdp": full_params(model)}
    for key, (make, _) in ZERO_RESUMED.items():
        model = DistributedDataParallel(build_model())
        opt = make(model)
        load_consolidated(model, opt, zero_path(out, key))
        train(model, opt, range(HALF, STEPS), rank, world)
        results[key] = {"resumed": full_params(model.module)}
    return results


def misfit_errors(rank: int, world: int, out: str) -> dict:
    """``load_state_dict`` of state saved by 2 processes or by one unsharded process.

    Returns, per optimizer and source, the error message (None if it loaded) and whether the
    optimizer's state stayed as it was.
    """
    results = {}
    for name in CHECKPOINTED:
        model = fsdp_model(world)
        opt = OPTIMIZERS[name](model.parameters())
        train(model, opt, range(1), rank, world)
        unsharded = build_model()
        unsharded_opt = OPTIMIZERS[name](unsharded.parameters())
        train(unsharded, unsharded_opt, range(HALF))
        sources = {
            "2 processes": partial(
                torch.load,
                os.path.join(out, "ckpt", f"{name}.rank{rank % 2}.pt"),
                weights_only=False,
            ),
            "1 process": unsharded_opt.state_dict,
        }
        for source, load in sources.items():
            before = local_state(opt)
            try:
                opt.load_state_dict(load())
                error = None
            except ValueError as e:
                error = str(e)
            after = local_state(opt)
            unchanged = before.keys() == after.keys() and all(
                torch.equal(before[k], after[k]) for k in before
            )
            results[f"{name} from {source}"] = {"error": error, "unchanged": unchanged}
    return results


def local_state(opt) -> dict[tuple, torch.Tensor]:
    """This rank's part of every state tensor, copied."""
    return {
        (id(p), key): (value.to_local() if isinstance(value, DTensor) else value).clone()
        for p, entry in opt.state.items()
        for key, value in entry.items()
        if isinstance(value, torch.Tensor)
    }


#: Trust ratios and GC on other shardings: (optimizer, sharded dim) by result key.
RESHARDED = {
    f"{name}, Shard({dim})": (name, dim)
    for name in ("LARS", "RangerLARS", "SGD+GC")
    for dim in (0, 1)
}

#: Presets run as ZeroRedundancyOptimizer's ``optimizer_class``.
ZERO_CLASSES = ("LARS", "Ranger", "RangerLARS")


def zero_optimizer(params, optimizer_class, **defaults):
    """``ZeroRedundancyOptimizer``, imported on first use.

    Importing torch.distributed.optim scripts its functional optimizers: seconds of start-up and
    a stream of deprecation warnings in the test process, which imports this module for its tables.
    """
    from torch.distributed.optim import ZeroRedundancyOptimizer

    return ZeroRedundancyOptimizer(params, optimizer_class=optimizer_class, **defaults)


def zero_preset(name: str, model: nn.Module):
    """The preset ``OPTIMIZERS[name]`` as ZeroRedundancyOptimizer's ``optimizer_class``."""
    preset = OPTIMIZERS[name]
    return zero_optimizer(model.parameters(), preset.func, **preset.keywords)


def lookahead_zero(model: nn.Module) -> rangerlab.Lookahead:
    """Lookahead around ZeRO-sharded torch AdamW: the same maths as "Lookahead(torch AdamW)"."""
    inner = zero_optimizer(model.parameters(), torch.optim.AdamW, lr=0.01, weight_decay=0.1)
    return rangerlab.Lookahead(inner, k=3, alpha=0.5)


#: ZeRO set-ups saved with consolidate_state_dict and resumed: (factory, reference name).
ZERO_RESUMED = {
    "ZeRO(Ranger)": (partial(zero_preset, "Ranger"), "Ranger"),
    "Lookahead(ZeRO(torch AdamW))": (lookahead_zero, "Lookahead(torch AdamW)"),
}


def zero_path(out: str, key: str) -> str:
    return os.path.join(out, f"zero_resume_{list(ZERO_RESUMED).index(key)}.pt")


def load_consolidated(model: DistributedDataParallel, opt, path: str) -> None:
    """Every rank loads the whole consolidated state dict; ZeRO keeps its own partition."""
    saved = torch.load(path, weights_only=True)
    model.module.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optim"])


def zero_checks(rank: int, world: int, out: str) -> dict:
    """ZeroRedundancyOptimizer over rangerlab classes, and Lookahead around it, with resume.

    The consolidated state dicts stay in ``out`` for the 3-process scenario.
    """
    results = {}
    for name in ZERO_CLASSES:
        model = DistributedDataParallel(build_model())
        train(model, zero_preset(name, model), range(STEPS), rank, world)
        results[f"ZeRO({name})"] = {"zero": full_params(model.module)}
    for key, (make, _) in ZERO_RESUMED.items():
        model = DistributedDataParallel(build_model())
        opt = make(model)
        train(model, opt, range(HALF), rank, world)
        opt.consolidate_state_dict(to=0)
        if rank == 0:
            state = {"model": model.module.state_dict(), "optim": opt.state_dict()}
            torch.save(state, zero_path(out, key))
        dist.barrier()
        train(model, opt, range(HALF, STEPS), rank, world)
        resumed = DistributedDataParallel(build_model())
        resumed_opt = make(resumed)
        load_consolidated(resumed, resumed_opt, zero_path(out, key))
        train(resumed, resumed_opt, range(HALF, STEPS), rank, world)
        results[key] = {"zero": full_params(model.module), "resumed": full_params(resumed.module)}
    return results


SCENARIOS = {"two": scenario_two, "three": scenario_three}


def main() -> None:
    scenario, rank, world, port, out = sys.argv[1:]
    rank, world = int(rank), int(world)
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        results = SCENARIOS[scenario](rank, world, out)
        if rank == 0:
            torch.save(results, os.path.join(out, f"{scenario}.pt"))
        dist.barrier()
    finally:
        # Free what still holds the group's pending work (DDP reducers, ZeRO's handles) while the
        # group and the interpreter are alive: gloo aborts the process ("terminate called without
        # an active exception") when such objects die during interpreter shutdown.
        gc.collect()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
