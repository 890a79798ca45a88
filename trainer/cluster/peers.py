"""A process of a multi-process run that dies (killed, out of memory, its node gone) ends the others: the
collective they wait in fails with the transport's error (gloo: "Connection reset by peer"; NCCL: a
remote error or a watchdog timeout). That is no bug to show as a traceback: each survivor says in one line
that it lost a peer, and where the run can go on from.
"""

from __future__ import annotations

from pathlib import Path

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
    from trainer.lifecycle.run_config import resume_command
    from trainer.lifecycle.run_dir import CHECKPOINTS, LAST_CKPT

    if run_dir is None or not run_dir.is_dir():
        return "it had not started training; nothing was saved"
    last = run_dir / CHECKPOINTS / LAST_CKPT
    if not last.exists():
        return f"it had saved no checkpoint yet; start it again (its run directory: {run_dir})"
    return f"its newest checkpoint is {last}; continue with `{resume_command(recipe, run_dir)}`"
