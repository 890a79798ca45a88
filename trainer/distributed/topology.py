"""How many processes train and where this one stands: from torchrun's world, or one process.

Several processes are always started by torchrun: by the user, by slurm/train.sbatch, or by `trainer
fit` itself for `trainer.devices=N` (see trainer.cluster.launch). Lightning's own launcher, which
re-runs the command for each extra rank, is never used: one way of starting ranks means one way for
them to agree on the run (trainer.distributed.process_group).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from trainer.cluster.env import LaunchedWorld, torchrun_world
from trainer.config.schema import explicit_device_count
from trainer.errors import UserError


@dataclass(frozen=True)
class Topology:
    """How many processes train, and how Lightning is to be told so."""

    devices: int  # processes per node
    num_nodes: int
    world_size: int
    accelerator: str  # "cpu" or "gpu" (resolved from "auto")


def resolve_accelerator(accelerator: str) -> str:
    if accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise UserError(
                f"trainer.accelerator={accelerator} but no CUDA GPU is visible; use trainer.accelerator=cpu"
            )
        return "gpu"
    if accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return "cpu"


def devices_per_node(accelerator: str, devices: int | str | list[int]) -> int:
    """The processes per node a recipe asks for, checked against what this machine has."""
    resolved = resolve_accelerator(accelerator)
    available = torch.cuda.device_count() if resolved == "gpu" else (os.cpu_count() or 1)
    count = explicit_device_count(devices)
    if count is None:  # auto (or -1): every local GPU, or one CPU process
        return max(1, torch.cuda.device_count()) if resolved == "gpu" else 1
    if count > available:
        kind = "CUDA GPUs" if resolved == "gpu" else "CPU cores"
        raise UserError(f"trainer.devices={devices!r} asks for more devices than exist ({available} {kind} here)")
    if resolved == "gpu" and isinstance(devices, list) and max(devices) >= available:
        raise UserError(f"trainer.devices={devices!r} names a GPU that does not exist ({available} here)")
    return count


def resolve_topology(accelerator: str, devices: int | str | list[int], num_nodes: int) -> Topology:
    """Devices and nodes from torchrun's environment when it started us, else one process.

    Under torchrun the launcher's `--nproc_per_node` and `--nnodes` decide; a recipe that names other
    counts is an error on every rank before any collective, not a hang.
    """
    resolved = resolve_accelerator(accelerator)
    world = torchrun_world()
    if world is None:
        if devices_per_node(accelerator, devices) > 1 or num_nodes > 1:
            raise UserError(
                "several processes are started by torchrun: run `trainer fit` from the command line (it starts "
                "them), or use launch/single_node.sh, launch/torchrun.sh or slurm/train.sbatch"
            )
        return Topology(1, 1, 1, resolved)
    _check_launched_world(world, resolved, devices, num_nodes)
    return Topology(world.local_world_size, world.world_size // world.local_world_size, world.world_size, resolved)


def _check_launched_world(world: LaunchedWorld, accelerator: str, devices: int | str | list[int], nodes: int) -> None:
    """The processes torchrun started (on SLURM: from the allocation) must match what the recipe asks."""
    asked = explicit_device_count(devices)
    if asked is not None and asked != world.local_world_size:
        raise UserError(
            f"trainer.devices={devices!r} but the launcher started {world.local_world_size} processes per node "
            "(on SLURM: one per allocated GPU, or per task without GPUs); drop trainer.devices, "
            "or ask the launcher or SLURM for that many"
        )
    launched_nodes = world.world_size // world.local_world_size
    if nodes > 1 and nodes != launched_nodes:
        raise UserError(
            f"trainer.num_nodes={nodes} but the launcher started {launched_nodes} node(s); drop trainer.num_nodes "
            "(the launcher decides) or start that many nodes"
        )
    if accelerator == "gpu" and world.local_world_size > torch.cuda.device_count():
        raise UserError(
            f"the launcher started {world.local_world_size} processes per node but this node has "
            f"{torch.cuda.device_count()} visible CUDA GPUs; ask SLURM for more GPUs (--gpus-per-node) "
            "or start fewer processes (--nproc-per-node)"
        )
