"""The one place that reads the variables launchers set: torchrun (and its elastic agent) and SLURM.

No torch import here: the CLI consults it before it decides whether to import torch at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from trainer.errors import UserError

# torchrun (torch.distributed.run) sets all of these for every worker it starts.
_TORCHRUN_WORLD = ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "RANK", "LOCAL_RANK", "GROUP_RANK")


@dataclass(frozen=True)
class LaunchedWorld:
    """The world torchrun started this process in."""

    world_size: int
    local_world_size: int  # workers on this node
    rank: int
    local_rank: int
    node_rank: int


def torchrun_world() -> LaunchedWorld | None:
    """The world torchrun started this process in, or None when no launcher did."""
    present = [name for name in _TORCHRUN_WORLD if name in os.environ]
    if not present:
        return None
    if len(present) < len(_TORCHRUN_WORLD) or "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        missing = [n for n in (*_TORCHRUN_WORLD, "MASTER_ADDR", "MASTER_PORT") if n not in os.environ]
        raise UserError(
            f"the environment names a torchrun world ({', '.join(present)}) but lacks {', '.join(missing)}; "
            "start the workers with torchrun, or unset those variables"
        )
    return LaunchedWorld(
        world_size=_number("WORLD_SIZE"),
        local_world_size=_number("LOCAL_WORLD_SIZE"),
        rank=_number("RANK"),
        local_rank=_number("LOCAL_RANK"),
        node_rank=_number("GROUP_RANK"),
    )


def _number(name: str, default: int | None = None) -> int:
    """An integer a launcher set; a broken value is one clear line, not a traceback."""
    text = os.environ.get(name) or ""
    if not text and default is not None:
        return default
    try:
        return int(text)
    except ValueError:
        raise UserError(f"{name}={text!r} is not a number; the launcher's environment is broken") from None


@dataclass(frozen=True)
class AgentStore:
    """torchrun's agent hosts a TCP store its workers may share (TORCHELASTIC_USE_AGENT_STORE)."""

    host: str
    port: int


def agent_store() -> AgentStore | None:
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    return AgentStore(os.environ["MASTER_ADDR"], _number("MASTER_PORT"))


def elastic_restart_count() -> int:
    """torchrun's restarts of this worker group inside one attempt (`--max-restarts`)."""
    return _number("TORCHELASTIC_RESTART_COUNT", default=0)


def slurm_job_id() -> str | None:
    return os.environ.get("SLURM_JOB_ID") or None


def slurm_restart_count() -> int:
    """How often SLURM has requeued this job."""
    return _number("SLURM_RESTART_COUNT", default=0)


def restart_count() -> int:
    """How often this job has started again: SLURM requeues plus torchrun's elastic restarts in this attempt.

    Both can be set at once (torchrun inside a requeued SLURM job; torchrun sets its count to 0 first).
    """
    return elastic_restart_count() + slurm_restart_count()


def job_identity() -> str | None:
    """A name for this job that stays the same across its restarts, when a launcher gives one."""
    job = slurm_job_id()
    if job is not None:
        return f"slurm-{job}"
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    return f"torchrun-{run_id}" if run_id and run_id != "none" else None


def slurm_warning_file() -> str | None:
    """Where slurm/train.sbatch leaves the time-limit warning (USR1) it passed on, for workers that were
    still starting (ignoring USR1) when it came."""
    return os.environ.get("TRAINER_SLURM_WARNING") or None


RUN_DIR_NOTE = "TRAINER_RUN_DIR_NOTE"  # set by trainer.cluster.launch for its workers


def run_dir_note() -> str | None:
    """The file where rank 0 writes its run directory when `trainer fit` started the workers itself."""
    return os.environ.get(RUN_DIR_NOTE) or None


def elastic_error_file() -> str | None:
    """Where torchrun's agent reads a failed worker's reason (TORCHELASTIC_ERROR_FILE), when a launcher set it."""
    return os.environ.get("TORCHELASTIC_ERROR_FILE") or None
