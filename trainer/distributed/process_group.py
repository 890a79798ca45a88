"""The process group, started early, and the few things ranks settle between them before Lightning starts.

Under torchrun every rank starts at once. The group is initialised here, before Lightning (which, like
DeepSpeed, reuses an existing one), so that rank 0 can decide the run's start (its directory, the
checkpoint it resumes from) and every rank learn it by one broadcast, errors included.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TypeVar

import torch

from trainer.cluster.env import agent_store, elastic_restart_count, torchrun_world
from trainer.cluster.hosts import check_reachable_hostname
from trainer.errors import UserError

T = TypeVar("T")
# Set-up collectives wait for rank 0 to decide, convert a checkpoint or tokenise a data set; past this
# they fail instead of waiting forever for a peer that is gone.
SETUP_TIMEOUT = timedelta(minutes=30)


def init_process_group(accelerator: str) -> None:
    """Start the default group under torchrun (a no-op for one process or when it exists)."""
    world = torchrun_world()
    if world is None or world.world_size == 1 or torch.distributed.is_initialized():
        return
    backend = "gloo"
    if world.world_size > world.local_world_size and accelerator == "cpu":
        check_reachable_hostname()  # before gloo would bind to loopback and the others wait for it
    if accelerator == "gpu":
        torch.cuda.set_device(world.local_rank)
        backend = "nccl"
    store = agent_store()
    if store is None:
        torch.distributed.init_process_group(backend=backend, timeout=SETUP_TIMEOUT)
        return
    # torchrun's agent hosts the store and keeps it across elastic restarts: the keys a dead round wrote
    # (its groups' peer addresses) would be read again by the next round. A prefix per restart keeps
    # each round to its own keys, for the default group and every group made from it (Lightning's too).
    agent = torch.distributed.TCPStore(store.host, store.port, world.world_size, is_master=False)
    prefixed = torch.distributed.PrefixStore(f"trainer/restart-{elastic_restart_count()}", agent)
    torch.distributed.init_process_group(
        backend=backend, store=prefixed, rank=world.rank, world_size=world.world_size, timeout=SETUP_TIMEOUT
    )


def rank_hostnames() -> list[str]:
    """Every rank's hostname, by rank (this one's alone without a process group)."""
    name = socket.gethostname()
    if not _active():
        return [name]
    names: list[str | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(names, name)
    return [str(n) for n in names]


def _active() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank_zero_decides(decide: Callable[[], T]) -> T:
    """Rank 0 runs `decide`; every rank returns its result, or raises its error.

    Rank 0 tells the others about a failure before it raises, or they would wait for it forever.
    """
    if not _active() or torch.distributed.get_world_size() == 1:
        return decide()
    payload: list[object] = [None]
    failure: BaseException | None = None
    if torch.distributed.get_rank() == 0:
        try:
            payload = [("ok", decide())]
        except BaseException as err:  # every failure, Ctrl-C included, must reach the other ranks
            failure = err
            payload = [("error", _failure_message(err))]
    torch.distributed.broadcast_object_list(payload, src=0)
    if failure is not None:
        raise failure
    kind, value = payload[0]  # type: ignore[misc]
    if kind == "error":
        raise UserError(value)
    return value  # type: ignore[return-value]


def _failure_message(err: BaseException) -> str:
    return str(err) if isinstance(err, UserError) else f"rank 0 failed during set-up ({type(err).__name__})"


@contextlib.contextmanager
def rank_zero_first(per_node: bool = False) -> Iterator[None]:
    """Rank 0 does the work first and the others wait, then do theirs (cache hits by then).

    `per_node`: rank 0 of each node goes first (node-local data caches); otherwise global rank 0 alone
    (a checkpoint conversion on shared storage). If a first rank fails, the waiting ones raise its error
    instead of waiting for it forever. For one process this is a no-op.
    """
    world = torchrun_world()
    if world is None or not _active() or world.world_size == 1:
        yield
        return
    first = (world.local_rank if per_node else world.rank) == 0
    if not first:
        outcomes = _gather_outcome(None)  # waits until the first ranks are done
        leader = world.node_rank * world.local_world_size if per_node else 0
        if outcomes[leader] is not None:
            raise UserError(outcomes[leader])
        yield
        return
    try:
        yield
    except BaseException as err:
        _gather_outcome(_failure_message(err))
        raise
    _gather_outcome(None)


def _gather_outcome(outcome: str | None) -> list[str | None]:
    outcomes: list[str | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(outcomes, outcome)
    return outcomes
