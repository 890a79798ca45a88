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
    from trainer.lifecycle.run_dir import newest_complete_checkpoint

    if run_dir is None or not run_dir.is_dir():
        return "it had not started training; nothing was saved"
    last = newest_complete_checkpoint(run_dir)  # what `resume=` continues from: last.ckpt, else the newest best-k
    if last is None:
        return f"it had saved no checkpoint yet; start it again (its run directory: {run_dir})"
    command = slurm_resume_command if slurm_job_id() else resume_command  # under SLURM: a new job
    return f"its newest checkpoint is {last}; continue with `{command(recipe, run_dir)}`"


def rank_that_died(failures: dict[int, Any], lost_a_peer: set[int]) -> tuple[int, str] | None:
    """The rank whose death ended the run, and how it died, from torchrun's failures (rank -> ProcessFailure);
    None for any other failure. A rank died when a signal ended it without a word (SIGKILL, the out-of-memory
    killer, a segfault) and either others said they lost a peer (`lost_a_peer`), or it was the first to fail
    (the others were then still starting, and the agent stopped them)."""
    silent = [rank for rank in failures if rank not in lost_a_peer and not _said_why(failures[rank])]
    if not silent:
        return None

    # The agent stops the rest after the first failure, with SIGTERM, often within the same second (torchrun's
    # timestamps are whole seconds): a rank SIGTERM ended sorts after one that failed otherwise at that time.
    def order(rank: int) -> tuple[int, bool]:
        return failures[rank].timestamp, failures[rank].exitcode == -signal.SIGTERM

    first = min(silent, key=order)
    code = failures[first].exitcode
    if code >= 0:  # a crash, whose traceback is in its output: not a death to resume from
        return None
    if not lost_a_peer and first != min(failures, key=order):  # another failure came first
        return None
    return first, f"killed by {signal.Signals(-code).name}"


def _said_why(failure: Any) -> bool:
    from trainer.cluster.launch import STATUS_KEY

    return STATUS_KEY in (failure.error_file_data or {})
