"""Loggers: CSV always (metrics.csv in the run directory), TensorBoard and Weights & Biases on request."""

from __future__ import annotations

import csv
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from trainer.config.schema import RunConfig


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv; a resumed run appends to it instead."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = list(csv.DictReader(file).fieldnames or [])


class RunCSVLogger(CSVLogger):
    """metrics.csv in the run directory itself, kept across resumes of the same run."""

    def __init__(self, run_dir: Path) -> None:
        # Flushed at every logging step: metrics.csv can be followed live and survives a killed run.
        super().__init__(save_dir=str(run_dir), name="", version="", flush_logs_every_n_steps=1)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def build_loggers(cfg: RunConfig, run_dir: Path, wandb_id: str | None = None) -> list[Logger]:
    loggers: list[Logger] = [RunCSVLogger(run_dir)]
    if "tensorboard" in cfg.logger:
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version=""))
    if "wandb" in cfg.logger:
        from lightning.pytorch.loggers import WandbLogger

        # The API key stays in wandb's own environment (WANDB_API_KEY or its netrc); the config
        # logged here has no field for it.
        options = {"mode": cfg.wandb.mode} if cfg.wandb.mode else {}
        loggers.append(
            WandbLogger(
                project=cfg.wandb.project,
                entity=cfg.wandb.entity,
                name=f"{cfg.name}/{run_dir.name}",
                save_dir=str(run_dir),
                id=wandb_id,
                resume="allow" if wandb_id else None,
                tags=cfg.wandb.tags,
                **options,
            )
        )
    return loggers
