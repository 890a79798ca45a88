"""Run directories: their files, how a run is found again, what is never overwritten, and who may write.

A run directory holds one run: `config.yaml`, `metrics.csv`, `checkpoints/`, `summary.json` and the
files below. It is written by one run at a time (an advisory lock held by rank 0), never written into
by a new run unless the user says `overwrite=true`, and replaced only if it really is a run directory.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from trainer.errors import UserError
from trainer.files import refuse_special
from trainer.lifecycle.claim import in_use
from trainer.writable import check_writable

RUNS_ROOT = Path("runs")
CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.csv"
CHECKPOINTS = "checkpoints"
LAST_CKPT = "last.ckpt"
JOB_FILE = "job"  # the launcher's job id: a restarted job finds its run by it
WANDB_ID_FILE = "wandb_run_id"  # the W&B run a resume logs into
INPUTS_FILE = "inputs.json"  # what the model's inputs look like (image size, label names), for export and predict
TEST_CONFUSION_FILE = "test_confusion.json"  # a classifier's test counts by class (report/saved_confusion.py)


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


def check_new_run_dir(run_dir: Path, overwrite: bool) -> bool:
    """Whether a new run may write to `run_dir`; True when that replaces an old run (`overwrite=true`).

    A run never writes into an existing, non-empty directory unless the user says `overwrite=true`, and
    even then only over a run directory: `overwrite=true run_dir=.` must not empty a source tree.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"run_dir {str(run_dir)!r} is a file; choose another run_dir")
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        check_writable(run_dir, "run_dir")
        return False
    is_a_run = (run_dir / CONFIG_FILE).is_file()
    if not overwrite:
        if not is_a_run:
            raise UserError(f"run_dir {str(run_dir)!r} holds files but no run; choose an empty or new run_dir")
        raise UserError(
            f"run_dir {str(run_dir)!r} already holds a run; choose another run_dir, continue it with "
            f"resume={run_dir}, or replace it with overwrite=true"
        )
    strangers = sorted(entry.name for entry in run_dir.iterdir() if not _belongs_to_a_run(entry.name))
    if not is_a_run or strangers:
        why = f"it holds {strangers[0]!r}, which no run writes" if strangers else f"it has no {CONFIG_FILE}"
        raise UserError(
            f"overwrite=true: run_dir {str(run_dir)!r} is not a run directory ({why}); nothing was deleted: "
            "choose an empty or new run_dir"
        )
    check_writable(run_dir, "run_dir")
    return True


# What a run directory holds (this file's names, the loggers', `trainer export`'s, `trainer report`'s).
RUN_ENTRIES = {CONFIG_FILE, SUMMARY_FILE, METRICS_FILE, CHECKPOINTS, JOB_FILE, WANDB_ID_FILE, INPUTS_FILE,
               TEST_CONFUSION_FILE, "tokenizer.json", "tensorboard", "wandb", "export", "export-onnx",
               "export-torchscript", "report", ".replaced-run"}  # fmt: skip


def _belongs_to_a_run(name: str) -> bool:
    return name in RUN_ENTRIES or name.endswith(".tmp")


def newest_complete_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint a resume continues from: last.ckpt; or the one it was replacing, if a crash came between
    the two renames of a swap; or, for a run killed before it wrote a last.ckpt (kill -9, out of memory),
    the newest of its best-k checkpoints.

    A last.ckpt is written beside the old one (`.partial`) and swapped in only when complete, so neither
    of the first two is ever half-written; `.partial` never counts.
    """
    last = run_dir / CHECKPOINTS / LAST_CKPT
    for candidate in (last, last.with_name(LAST_CKPT + ".previous")):
        if candidate.exists():
            return candidate
    best = sorted((run_dir / CHECKPOINTS).glob("epoch*-step*.ckpt"), key=checkpoint_step)
    return best[-1] if best else None


def checkpoint_step(path: Path) -> int:
    """The step in a best-k checkpoint's name (`epoch3-step164.ckpt`), -1 for another name."""
    match = _STEP.search(path.name)
    return int(match.group(1)) if match else -1


_STEP = re.compile(r"step(\d+)")


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
        if run_dir.is_dir() and in_use(run_dir):
            raise UserError(f"resume={resume!r}: that run is still training (in use by another trainer process) "
                            "and has no checkpoint yet; wait for it, or stop it with SIGTERM, then resume")  # fmt: skip
        raise UserError(
            f"resume={resume!r}: no {CHECKPOINTS}/{LAST_CKPT} there; give a run directory that holds a checkpoint"
        )
    refuse_special(run_dir / CONFIG_FILE, "run file")
    if not (run_dir / CONFIG_FILE).is_file():
        raise UserError(f"resume={resume!r}: no {CONFIG_FILE} there; give a run directory written by `trainer fit`")
    return run_dir


def existing_checkpoint(ckpt: str | None, command: str) -> Path:
    if ckpt is None:
        raise UserError(f"`trainer {command}` needs a checkpoint: add ckpt=runs/<recipe>/<run>/checkpoints/last.ckpt")
    path = Path(ckpt).expanduser()
    if not path.exists():
        raise UserError(f"checkpoint {ckpt!r} does not exist; give ckpt=<path to a .ckpt file>")
    return path


def run_dir_of(ckpt: Path) -> Path | None:
    """runs/<recipe>/<run>/checkpoints/x.ckpt -> runs/<recipe>/<run>, if the checkpoint sits in a run directory."""
    run_dir = ckpt.resolve().parent.parent
    in_run = ckpt.resolve().parent.name == CHECKPOINTS and (run_dir / CONFIG_FILE).is_file()
    return run_dir if in_run else None
