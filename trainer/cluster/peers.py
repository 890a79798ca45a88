"""A process of a multi-process run that dies (killed, out of memory, its node gone) ends the others: the
collective they wait in fails with the transport's error (gloo: "Connection reset by peer"; NCCL: a
remote error or a watchdog timeout). That is no bug to show as a traceback: each survivor says in one line
that it lost a peer, and where the run can go on from.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

# Substrings of the errors torch's process groups raise when a peer is gone.
_LOST_PEER = (
    "Connection reset by peer",
    "Connection closed by peer",
    "Connection refused",
    "Broken pipe",
    "pair closure",
    "NCCL communicator was aborted",
    "remote process exited or there was a network error",
    "Socket Timeout",
)


def is_lost_peer(err: BaseException) -> bool:
    """Whether `err` is a process group's report that another rank is gone (torch's DistError and its
    subclasses are RuntimeErrors, as gloo's own errors are)."""
    return isinstance(err, RuntimeError) and any(text in str(err) for text in _LOST_PEER)


def where_to_go_on(run_dir: Path | None, recipe: str | None) -> str:
    """The run's newest checkpoint and the command that continues from it, or that there is none."""
    from trainer.cluster.env import slurm_job_id
    from trainer.lifecycle.run_config import resume_command, slurm_resume_command
    from trainer.lifecycle.run_dir import CHECKPOINTS, LAST_CKPT

    if run_dir is None or not run_dir.is_dir():
        return "it had not started training; nothing was saved"
    last = run_dir / CHECKPOINTS / LAST_CKPT
    if not last.exists():
        return f"it had saved no checkpoint yet; start it again (its run directory: {run_dir})"
    command = slurm_resume_command if slurm_job_id() else resume_command  # under SLURM: a new job
    return f"its newest checkpoint is {last}; continue with `{command(recipe, run_dir)}`"


def rank_that_died(failures: dict[int, Any], lost_a_peer: set[int]) -> tuple[int, str] | None:
    """The rank whose death ended the run, and how it died, from torchrun's failures (rank -> ProcessFailure);
    None for any other failure. A rank died when it failed without a word (killed, or crashed in native
    code) and either others said they lost a peer (`lost_a_peer`), or it was the first to fail and a signal
    killed it (the others were then still starting, and the agent stopped them)."""
    silent = [rank for rank in failures if rank not in lost_a_peer and not _said_why(failures[rank])]
    if not silent:
        return None

    # The agent stops the rest after the first failure, with SIGTERM, often within the same second (torchrun's
    # timestamps are whole seconds): a rank SIGTERM ended sorts after one that failed otherwise at that time.
    def order(rank: int) -> tuple[int, bool]:
        return failures[rank].timestamp, failures[rank].exitcode == -signal.SIGTERM

    first = min(silent, key=order)
    code = failures[first].exitcode
    if not lost_a_peer:
        first_of_all = min(failures, key=order)
        if first != first_of_all or code >= 0:  # another failure came first, or a crash that printed its traceback
            return None
    return first, (f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}")


def _said_why(failure: Any) -> bool:
    from trainer.cluster.launch import STATUS_KEY

    return STATUS_KEY in (failure.error_file_data or {})
