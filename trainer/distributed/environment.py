"""Where this process stands among its peers, and the few facts all ranks must agree on before Lightning starts.

Two launch paths reach `fit`:
- `trainer fit ... trainer.devices=N`: one process; Lightning's launcher re-runs the same command for
  ranks 1..N-1 when training starts. Those children find the run directory in `TRAINER_RUN_PLACE`.
- `torchrun ... -m trainer fit ...`: every rank starts at once. The process group is initialised
  here, early (Lightning and DeepSpeed reuse an existing one), so rank 0 can choose the run
  directory and broadcast it, with any error, to the others.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from trainer.config.schema import explicit_device_count
from trainer.errors import UserError

RUN_PLACE_ENV = "TRAINER_RUN_PLACE"


@dataclass(frozen=True)
class RunPlace:
    """The run directory, and the checkpoint the run resumes from (None: a fresh start)."""

    run_dir: Path
    resume_from: Path | None = None

    def to_json(self) -> str:
        return json.dumps({"run_dir": str(self.run_dir), "resume_from": self.resume_from and str(self.resume_from)})

    @classmethod
    def from_json(cls, text: str) -> RunPlace:
        data = json.loads(text)
        return cls(Path(data["run_dir"]), Path(data["resume_from"]) if data["resume_from"] else None)


@dataclass(frozen=True)
class Topology:
    """How many processes train, and how Lightning is to be told so."""

    devices: int | str | list[int]  # per node, as Lightning takes it
    num_nodes: int
    world_size: int
    accelerator: str  # "cpu" or "gpu" (resolved from "auto")


@dataclass(frozen=True)
class TorchrunWorld:
    world_size: int
    local_world_size: int
    rank: int
    local_rank: int


def torchrun_world() -> TorchrunWorld | None:
    """The world torchrun (torch.distributed.run) started this process in, if it did."""
    names = ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "RANK", "LOCAL_RANK", "GROUP_RANK")
    if not all(name in os.environ for name in names):
        return None
    return TorchrunWorld(
        world_size=int(os.environ["WORLD_SIZE"]),
        local_world_size=int(os.environ["LOCAL_WORLD_SIZE"]),
        rank=int(os.environ["RANK"]),
        local_rank=int(os.environ["LOCAL_RANK"]),
    )


def resolve_topology(accelerator: str, devices: int | str | list[int], num_nodes: int) -> Topology:
    """Devices and nodes from the recipe, or from torchrun's environment when it started us.

    Under torchrun the launcher's `--nproc_per_node` and `--nnodes` decide; nothing has to be kept
    equal by hand in the recipe.
    """
    resolved = _resolve_accelerator(accelerator)
    world = torchrun_world()
    if world is not None:
        _check_launched_world(world, resolved, devices)
        return Topology(world.local_world_size, world.world_size // world.local_world_size, world.world_size, resolved)
    available = torch.cuda.device_count() if resolved == "gpu" else (os.cpu_count() or 1)
    count = explicit_device_count(devices)
    if count is None:  # auto
        count = max(1, torch.cuda.device_count()) if resolved == "gpu" else 1
        devices = count
    if count < 1:
        raise UserError(f"trainer.devices={devices!r} asks for no device; use 1 or more, or 'auto'")
    if count > available:
        kind = "CUDA GPUs" if resolved == "gpu" else "CPU cores"
        raise UserError(f"trainer.devices={devices!r} asks for more devices than exist ({available} {kind} here)")
    return Topology(devices, num_nodes, count * num_nodes, resolved)


def _check_launched_world(world: TorchrunWorld, accelerator: str, devices: int | str | list[int]) -> None:
    """The processes torchrun started (on SLURM: from the allocation) must match what the recipe asks.

    Every rank runs this before any collective, so a mismatch is one clear error on each, not a hang.
    """
    asked = explicit_device_count(devices)
    if asked is not None and asked != world.local_world_size:
        raise UserError(
            f"trainer.devices={devices!r} but the launcher started {world.local_world_size} processes per node "
            "(on SLURM: one per allocated GPU, or per task without GPUs); drop trainer.devices, "
            "or ask the launcher or SLURM for that many"
        )
    if accelerator == "gpu" and world.local_world_size > torch.cuda.device_count():
        raise UserError(
            f"the launcher started {world.local_world_size} processes per node but this node has "
            f"{torch.cuda.device_count()} visible CUDA GPUs; ask SLURM for more GPUs (--gpus-per-node) "
            "or start fewer processes (--nproc-per-node)"
        )


def _resolve_accelerator(accelerator: str) -> str:
    if accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise UserError(
                f"trainer.accelerator={accelerator} but no CUDA GPU is visible; use trainer.accelerator=cpu"
            )
        return "gpu"
    if accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if accelerator == "cpu":
        return "cpu"
    raise UserError(f"trainer.accelerator={accelerator!r} is not supported; use auto, cpu or gpu")


def restart_count() -> int:
    """How often this job has started again: SLURM requeues plus torchrun's elastic restarts in this attempt.

    Both can be set at once (torchrun inside a requeued SLURM job; torchrun sets its count to 0 first).
    """
    return _elastic_restarts() + int(os.environ.get("SLURM_RESTART_COUNT") or 0)


def _elastic_restarts() -> int:
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT") or 0)


def job_identity() -> str | None:
    """A name for this job that stays the same across its restarts, when a launcher gives one."""
    if os.environ.get("SLURM_JOB_ID"):
        return f"slurm-{os.environ['SLURM_JOB_ID']}"
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    return f"torchrun-{run_id}" if run_id and run_id != "none" else None


def agree_on_run_place(decide: Callable[[], RunPlace], accelerator: str) -> RunPlace:
    """Where every rank writes and what it resumes from: decided (and checked) once, by rank 0."""
    given = os.environ.get(RUN_PLACE_ENV)
    if given:  # a rank that Lightning's launcher started: the parent decided
        return RunPlace.from_json(given)
    world = torchrun_world()
    if world is None or world.world_size == 1:
        return decide()
    _init_process_group(world, accelerator)
    payload: list[tuple[str, str] | None] = [None]
    error: UserError | None = None
    if world.rank == 0:
        try:
            payload = [("ok", decide().to_json())]
        except UserError as err:  # tell the others before failing, or they wait forever
            error = err
            payload = [("error", str(err))]
    torch.distributed.broadcast_object_list(payload, src=0)
    if error is not None:
        raise error
    kind, value = payload[0]  # type: ignore[misc]
    if kind == "error":
        raise UserError(value)
    return RunPlace.from_json(value)


@contextlib.contextmanager
def exported_run_place(place: RunPlace) -> Iterator[None]:
    """Hands the run directory and resume point to the ranks Lightning's launcher starts in `trainer.fit`."""
    previous = os.environ.get(RUN_PLACE_ENV)
    os.environ[RUN_PLACE_ENV] = place.to_json()
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(RUN_PLACE_ENV, None)
        else:
            os.environ[RUN_PLACE_ENV] = previous


@contextlib.contextmanager
def rank_zero_first(per_node: bool = False) -> Iterator[None]:
    """Rank 0 does the work first and the others wait, then do theirs (cache hits by then).

    `per_node`: rank 0 of each node goes first (node-local data caches); otherwise global rank 0 alone
    (a checkpoint conversion on shared storage). Outside torchrun this is a no-op: Lightning's launcher
    starts the other ranks only after this process has done the work.
    """
    world = torchrun_world()
    active = world is not None and torch.distributed.is_available() and torch.distributed.is_initialized()
    first = active and (world.local_rank if per_node else world.rank) == 0
    if active and not first:
        torch.distributed.barrier()
    yield
    if first:
        torch.distributed.barrier()


def _init_process_group(world: TorchrunWorld, accelerator: str) -> None:
    if torch.distributed.is_initialized():
        return
    backend = "gloo"
    if _resolve_accelerator(accelerator) == "gpu":
        torch.cuda.set_device(world.local_rank)
        backend = "nccl"
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        torch.distributed.init_process_group(backend=backend)
        return
    # torchrun's agent hosts the store and keeps it across elastic restarts: the keys a dead round wrote
    # (its groups' peer addresses) would be read again by the next round. A prefix per restart keeps
    # each round to its own keys, for the default group and every group made from it (Lightning's too).
    agent_store = torch.distributed.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world.world_size, is_master=False
    )
    store = torch.distributed.PrefixStore(f"trainer/restart-{_elastic_restarts()}", agent_store)
    torch.distributed.init_process_group(backend=backend, store=store, rank=world.rank, world_size=world.world_size)
