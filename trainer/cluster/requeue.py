"""A SLURM job that a signal stopped puts itself back in the queue, once its checkpoint is written.

USR1 is the warning SLURM sends before the time limit (`--signal`). After the run has saved and
stopped, rank 0 runs `scontrol requeue $SLURM_JOB_ID`; the requeued job finds its run directory by
job id and resumes. SIGTERM (preemption, the time limit itself, `scancel`: SLURM does not say which,
the job shows COMPLETING in every case) requeues only where `slurm.requeue_on` names it, since a
requeue there would also bring back a job its user cancelled. Not requeued either: a job stopped by
Ctrl-C, a job with `slurm.requeue=false`, a job already requeued `slurm.max_requeues` times (the
retry cap).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from trainer.cluster.env import slurm_job_id, slurm_restart_count
from trainer.config.schema import SlurmConfig

REQUEUE_SIGNALS = ("SIGUSR1", "SIGTERM")


@dataclass(frozen=True)
class RequeueDecision:
    requeue: bool
    message: str  # one line for the job's log


def decide_requeue(settings: SlurmConfig, stopped_by: str | None, resume_hint: str) -> RequeueDecision | None:
    """Whether this stopped SLURM job requeues itself; None when it is not a SLURM job stopped by a signal.

    Every rank reaches the same decision from the same environment; rank 0 acts on it.
    """
    job = slurm_job_id()
    if job is None or stopped_by not in REQUEUE_SIGNALS:
        return None
    restarts = slurm_restart_count()
    if not settings.requeue or stopped_by not in settings.requeue_on:
        why = "slurm.requeue=false" if not settings.requeue else f"slurm.requeue_on={settings.requeue_on}"
        return RequeueDecision(
            False,
            f"SLURM job {job} stopped by {stopped_by}, checkpoint saved; not requeued ({why}); continue with "
            f"{resume_hint}",
        )
    if restarts >= settings.max_requeues:
        return RequeueDecision(
            False,
            f"SLURM job {job} stopped by {stopped_by} and not requeued: it was requeued {restarts} times, the "
            f"retry cap (slurm.max_requeues={settings.max_requeues}); continue with {resume_hint} "
            "or raise slurm.max_requeues",
        )
    return RequeueDecision(
        True, f"SLURM job {job} stopped by {stopped_by}: requeued ({restarts + 1} of {settings.max_requeues})"
    )


def requeue(job: str) -> str | None:
    """`scontrol requeue JOB`: SLURM ends this attempt and queues the job again. None, or why it failed."""
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as err:
        return str(err)
    if result.returncode != 0:
        return ((result.stderr or result.stdout).strip().splitlines() or [f"exit status {result.returncode}"])[0]
    return None
