"""Where a run starts: a new directory, the run `resume=` names, or, when a launcher restarted the job, the
job's own directory and newest checkpoint. Decided once, by rank 0, which then holds the directory (a
RunClaim) and writes nothing into it until every input of the run has been checked; until training
starts, whatever it wrote is undone if the run fails (see trainer.lifecycle.claim).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightning as L

from trainer.cluster.env import job_identity, restart_count
from trainer.cluster.signals import StopRequest
from trainer.config import RunConfig
from trainer.data.tokenizer import TOKENIZER_FILE
from trainer.errors import UserError
from trainer.lifecycle.checkpoints import CheckpointInfo, check_resumable
from trainer.lifecycle.claim import RunClaim
from trainer.lifecycle.run_config import run_yaml
from trainer.lifecycle.run_dir import (
    CHECKPOINTS,
    CONFIG_FILE,
    INPUTS_FILE,
    JOB_FILE,
    WANDB_ID_FILE,
    check_new_run_dir,
    default_run_dir,
    newest_complete_checkpoint,
    same_job,
)
from trainer.writable import check_writable

FINISHED_SCHEDULE = 1e-9  # a learning rate this fraction of optim.lr (or less) moves no weight


@dataclass(frozen=True)
class RunStart:
    """The run directory, the checkpoint the run resumes from (None: a fresh start), and whether the
    directory holds an old run that `overwrite=true` replaces once the new run's inputs are checked."""

    run_dir: Path
    checkpoint: Path | None = None
    replaces_old_run: bool = False


def decide_start(cfg: RunConfig) -> tuple[RunStart, RunClaim]:
    """Rank 0's decision, and its claim on the directory; a checkpoint to resume from is verified here."""
    if cfg.resume is not None:
        run_dir = Path(cfg.resume)
        checkpoint = Path(cfg.ckpt).expanduser() if cfg.ckpt else newest_complete_checkpoint(run_dir)
        assert checkpoint is not None  # find_resume_dir made sure of one
        claim = RunClaim.existing(run_dir)
        return _checked(RunStart(run_dir, checkpoint), claim, lambda: _check_resume(run_dir, checkpoint))
    job = job_identity()
    explicit = Path(cfg.run_dir).expanduser() if cfg.run_dir else None
    run_dir = explicit or default_run_dir(cfg.name or "run", job)
    if restart_count() > 0 and same_job(run_dir, job):
        # A launcher restarted this job: continue from its newest checkpoint, or start again in the
        # same place if it died before its first one.
        latest = newest_complete_checkpoint(run_dir)
        claim = RunClaim.existing(run_dir)
        return _checked(RunStart(run_dir, latest), claim, lambda: latest is None or check_resumable(latest))
    check_new_run_dir(run_dir, cfg.overwrite)  # before anything is made; again below, under the lock
    claim = RunClaim.make(run_dir, unique=explicit is None and job is None)
    start = RunStart(claim.run_dir)
    try:
        return replace(start, replaces_old_run=check_new_run_dir(claim.run_dir, cfg.overwrite)), claim
    except BaseException:
        claim.roll_back()
        raise


def _checked(start: RunStart, claim: RunClaim, check: Callable[[], Any]) -> tuple[RunStart, RunClaim]:
    try:
        check()
    except BaseException:
        claim.roll_back()
        raise
    return start, claim


def _check_resume(run_dir: Path, checkpoint: Path) -> None:
    check_writable(run_dir / CHECKPOINTS, "resume")
    check_resumable(checkpoint)


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
    if cfg.model.family == "custom":
        if info.hparams.get("class_path") != cfg.model.class_path:
            raise UserError(f"{where} is a {info.hparams.get('class_path')} model but this run asks model.class_path="
                            f"{cfg.model.class_path}; give the recipe it was trained with")  # fmt: skip
        for name, value in cfg.model.init_args.items():
            if _plain(trained.get(name)) != _plain(value):
                raise UserError(
                    f"{where} was trained with {name}={trained.get(name)!r} but this run asks "
                    f"model.init_args.{name}={value!r}; a checkpoint keeps its model: drop the override"
                )
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


def check_the_run_can_go_on(cfg: RunConfig, saved: CheckpointInfo, end: int, run_dir: Path) -> None:
    """A resumed run has steps left to train (`end`: where its limits now end it), at a learning rate that
    can still move its weights: a schedule that decayed to 0 stays there (the schedule is part of the
    resumed state), so extending such a run would change nothing while seeming to train."""
    t = cfg.trainer
    if saved.global_step >= end:
        raise UserError(
            f"the run is already at step {saved.global_step}, where its limits end it (trainer.max_steps="
            f"{t.max_steps}, trainer.max_epochs={t.max_epochs}: {end} steps); raise them to train on "
            "(both, where max_epochs stops it first)"
        )
    if saved.lr_fraction is not None and saved.lr_fraction <= FINISHED_SCHEDULE:
        raise UserError(
            f"the run's learning-rate schedule ({cfg.scheduler.name}) reached 0 at step {saved.global_step}: "
            f"extending it to step {end} would train at learning rate 0 and change nothing; start a new run from "
            f"its weights with a fresh schedule (init_from={str(run_dir)!r}); the schedule is part of what a resume "
            "restores, so scheduler.min_lr_ratio above 0 keeps a floor only for runs started with it"
        )


def write_run_files(cfg: RunConfig, start: RunStart, claim: RunClaim, wandb_id: str | None) -> None:
    """Rank 0, once everything is checked: set an old run aside (`overwrite=true`), or keep a copy of what a
    resumed run's files were, then write the new run's files. Final once training starts (claim.commit)."""
    if start.replaces_old_run:
        claim.set_old_run_aside()
    elif not claim.made_the_directory:
        claim.keep_a_copy(CONFIG_FILE, TOKENIZER_FILE, WANDB_ID_FILE, JOB_FILE, INPUTS_FILE)
    start.run_dir.mkdir(parents=True, exist_ok=True)
    (start.run_dir / CONFIG_FILE).write_text(run_yaml(cfg, start.run_dir))
    if wandb_id:
        (start.run_dir / WANDB_ID_FILE).write_text(wandb_id)
    job = job_identity()
    if job is not None:
        (start.run_dir / JOB_FILE).write_text(job)


class CommitAtTrainStart(L.Callback):
    """Training has started: what the run wrote into its directory before is final (see RunClaim), and
    from here on Ctrl-C saves a checkpoint instead of interrupting. A Ctrl-C still pending from set-up
    interrupts first, while the directory can still be put back."""

    def __init__(self, claim: RunClaim, stop: StopRequest) -> None:
        self.claim = claim
        self.stop = stop

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.stop.begin_training()
        self.claim.commit()
