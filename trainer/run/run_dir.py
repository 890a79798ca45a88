"""Run directories: where a run writes, how a stopped run is found again, and what is never overwritten."""

from __future__ import annotations

import time
from pathlib import Path

from trainer.errors import UserError

RUNS_ROOT = Path("runs")
CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
CHECKPOINTS = "checkpoints"
LAST_CKPT = "last.ckpt"


JOB_FILE = "job"


def default_run_dir(name: str, job: str | None = None) -> Path:
    """runs/<name>/<job> for a job a launcher names (its restarts find it again), else runs/<name>/<time>."""
    if job is not None:
        return RUNS_ROOT / name / job
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = RUNS_ROOT / name / stamp
    suffix = 1
    while candidate.exists():  # two runs started in the same second
        candidate = RUNS_ROOT / name / f"{stamp}-{suffix}"
        suffix += 1
    return candidate


def check_new_run_dir(run_dir: Path, overwrite: bool) -> None:
    """A run never writes into an existing, non-empty directory unless the user says `overwrite=true`."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"run_dir {str(run_dir)!r} is a file; choose another run_dir")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not overwrite:
        raise UserError(
            f"run_dir {str(run_dir)!r} already holds a run; choose another run_dir, continue it with "
            f"resume={run_dir}, or replace it with overwrite=true"
        )


def newest_complete_checkpoint(run_dir: Path) -> Path | None:
    """last.ckpt, or the one it was replacing if a crash came between the two renames of a swap.

    A checkpoint is written beside the old one (`.partial`) and swapped in only when complete, so
    neither of these is ever half-written; `.partial` never counts.
    """
    last = run_dir / CHECKPOINTS / LAST_CKPT
    for candidate in (last, last.with_name(LAST_CKPT + ".previous")):
        if candidate.exists():
            return candidate
    return None


def same_job(run_dir: Path, job: str | None) -> bool:
    marker = run_dir / JOB_FILE
    return job is not None and marker.is_file() and marker.read_text().strip() == job


def find_resume_dir(resume: str, name: str) -> Path:
    """`resume=last` is the newest run of the recipe that has a checkpoint; otherwise a run directory."""
    if resume == "last":
        runs = sorted(
            (p for p in (RUNS_ROOT / name).glob("*") if newest_complete_checkpoint(p) is not None),
            key=lambda p: newest_complete_checkpoint(p).stat().st_mtime,
        )
        if not runs:
            raise UserError(f"resume=last: no run of {name!r} with a checkpoint under {RUNS_ROOT / name}; train first")
        return runs[-1]
    run_dir = Path(resume).expanduser()
    if newest_complete_checkpoint(run_dir) is None:
        raise UserError(
            f"resume={resume!r}: no {CHECKPOINTS}/{LAST_CKPT} there; give a run directory that holds a checkpoint"
        )
    if not (run_dir / CONFIG_FILE).is_file():
        raise UserError(f"resume={resume!r}: no {CONFIG_FILE} there; give a run directory written by `trainer fit`")
    return run_dir


def check_checkpoint(ckpt: str | None, command: str) -> Path:
    if ckpt is None:
        raise UserError(f"`trainer {command}` needs a checkpoint: add ckpt=runs/<recipe>/<run>/checkpoints/last.ckpt")
    path = Path(ckpt).expanduser()
    if not path.exists():
        raise UserError(f"checkpoint {ckpt!r} does not exist; give ckpt=<path to a .ckpt file>")
    return path


def run_dir_of(ckpt: Path) -> Path:
    """runs/<recipe>/<run>/checkpoints/x.ckpt -> runs/<recipe>/<run>."""
    return ckpt.resolve().parent.parent
