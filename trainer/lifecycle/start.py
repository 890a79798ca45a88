"""Where a run starts: a new directory, the run `resume=` names, or, when a launcher restarted the job, the
job's own directory and newest checkpoint. Decided once, by rank 0, and nothing is written until every
input of the run has been checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.cluster.env import job_identity, restart_count
from trainer.config import RunConfig
from trainer.errors import UserError
from trainer.lifecycle.checkpoints import CheckpointInfo, check_resumable
from trainer.lifecycle.run_config import run_yaml
from trainer.lifecycle.run_dir import (
    CHECKPOINTS,
    CONFIG_FILE,
    JOB_FILE,
    WANDB_ID_FILE,
    check_new_run_dir,
    clear_old_run,
    default_run_dir,
    newest_complete_checkpoint,
    same_job,
)
from trainer.writable import check_writable


@dataclass(frozen=True)
class RunStart:
    """The run directory, the checkpoint the run resumes from (None: a fresh start), and whether the
    directory holds an old run that `overwrite=true` replaces once the new run's inputs are checked."""

    run_dir: Path
    checkpoint: Path | None = None
    replaces_old_run: bool = False
    restarted: bool = False  # a launcher restarted this job in its own directory

    @property
    def made_here(self) -> bool:
        """This session creates the run directory (a new run, not a resume or a restarted job)."""
        return self.checkpoint is None and not self.restarted


def decide_start(cfg: RunConfig) -> RunStart:
    """Rank 0's decision; a checkpoint to resume from is verified here, before any work."""
    if cfg.resume is not None:
        run_dir = Path(cfg.resume)
        checkpoint = Path(cfg.ckpt).expanduser() if cfg.ckpt else newest_complete_checkpoint(run_dir)
        assert checkpoint is not None  # find_resume_dir made sure of one
        check_writable(run_dir / CHECKPOINTS, "resume")
        check_resumable(checkpoint)
        return RunStart(run_dir, checkpoint)
    job = job_identity()
    run_dir = Path(cfg.run_dir).expanduser() if cfg.run_dir else default_run_dir(cfg.name or "run", job)
    if restart_count() > 0 and same_job(run_dir, job):
        # A launcher restarted this job: continue from its newest checkpoint, or start again in the
        # same place if it died before its first one.
        latest = newest_complete_checkpoint(run_dir)
        if latest is not None:
            check_resumable(latest)
        return RunStart(run_dir, latest, restarted=True)
    return RunStart(run_dir, replaces_old_run=check_new_run_dir(run_dir, cfg.overwrite))


def check_checkpoint_fits(
    cfg: RunConfig, info: CheckpointInfo, checkpoint: Path, expected_kwargs: dict[str, Any] | None = None
) -> None:
    """A checkpoint fits a config: same task, family and model settings, and, given the sizes the data
    decide (`expected_kwargs`: vocabulary, classes, sequence length), the same shapes. One line naming
    the first difference, before anything is loaded or written."""
    where = f"checkpoint {str(checkpoint)!r}"
    if info.task is not None and info.task != cfg.task:
        raise UserError(f"{where} is a {info.task} model but recipe {cfg.name!r} does {cfg.task}; give the "
                        "recipe it was trained with")  # fmt: skip
    family = info.hparams.get("family")
    if family != cfg.model.family:
        raise UserError(f"{where} is a {family} model but recipe {cfg.name!r} builds a {cfg.model.family}; give "
                        "the recipe it was trained with")  # fmt: skip
    trained = info.hparams.get("model_kwargs", {})
    model_fields = cfg.model.model_dump(exclude={"family"})
    asked = expected_kwargs if expected_kwargs is not None else {k: v for k, v in model_fields.items() if k in trained}
    for name, value in asked.items():
        if _plain(trained.get(name)) != _plain(value):
            setting = f"model.{name}" if name in model_fields else _data_setting(name)
            raise UserError(
                f"{where} was trained with {name}={trained.get(name)!r} but this run asks {setting}={value!r}; "
                "a checkpoint keeps its model: drop the override, or give the recipe and data it was trained with"
            )


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _data_setting(name: str) -> str:
    """The recipe setting behind a size the data decide."""
    return {
        "max_len": "data.block_size / data.max_length",
        "vocab_size": "the tokenizer's vocabulary (data.tokenizer)",
        "num_classes": "the label count (data.label_column)",
        "in_channels": "the image channels",
        "pad_id": "the tokenizer",
    }.get(name, name)


def write_run_files(cfg: RunConfig, start: RunStart, wandb_id: str | None) -> None:
    """Rank 0, once everything is checked: replace an old run (`overwrite=true`), then the new run's files."""
    if start.replaces_old_run:
        clear_old_run(start.run_dir)
    start.run_dir.mkdir(parents=True, exist_ok=True)
    (start.run_dir / CONFIG_FILE).write_text(run_yaml(cfg, start.run_dir))
    if wandb_id:
        (start.run_dir / WANDB_ID_FILE).write_text(wandb_id)
    job = job_identity()
    if job is not None:
        (start.run_dir / JOB_FILE).write_text(job)
