"""Loggers: CSV always (metrics.csv in the run directory), TensorBoard and Weights & Biases on request."""

from __future__ import annotations

import csv
import os
from argparse import Namespace
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

from trainer.config.schema import RunConfig
from trainer.lifecycle.run_dir import METRICS_FILE


class RunCSVLogger(Logger):
    """`metrics.csv` in the run directory: a row per logging step, a column per metric.

    A resumed run appends to the file the stopped run wrote (Lightning's CSVLogger deletes it), and a
    metric seen for the first time adds a column (the file is rewritten once with the wider header).
    Every row is on disk as soon as it is logged, so the file can be followed live and survives a
    killed run.
    """

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.path = run_dir / METRICS_FILE
        self._columns: list[str] | None = None

    @property
    def name(self) -> str:
        return "csv"

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return str(self.run_dir)

    @property
    def log_dir(self) -> str:
        return str(self.run_dir)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """The run's config.yaml holds them."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        row = {"step": step, **{key: _scalar(value) for key, value in metrics.items()}}
        columns = self._existing_columns()
        added = [key for key in row if key not in columns]
        if added:
            self._rewrite([*columns, *added])
        with open(self.path, "a", newline="") as file:
            csv.DictWriter(file, fieldnames=self._columns).writerow(row)

    def _existing_columns(self) -> list[str]:
        if self._columns is None:
            self._columns = []
            if self.path.is_file():
                with open(self.path, newline="") as file:
                    self._columns = list(csv.DictReader(file).fieldnames or [])
        return self._columns

    def _rewrite(self, columns: list[str]) -> None:
        rows: list[dict[str, str]] = []
        if self.path.is_file():
            with open(self.path, newline="") as file:
                rows = list(csv.DictReader(file))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        with open(partial, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(partial, self.path)
        self._columns = columns


def _scalar(value: Any) -> float:
    return value.item() if hasattr(value, "item") else float(value)


def build_loggers(cfg: RunConfig, run_dir: Path, wandb_id: str | None = None) -> list[Logger]:
    loggers: list[Logger] = [RunCSVLogger(run_dir)]
    if "tensorboard" in cfg.logger:
        from lightning.pytorch.loggers import TensorBoardLogger

        # No placeholder `hp_metric`: the real metrics are logged under their own names.
        loggers.append(
            TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False)
        )
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


def close_loggers(cfg: RunConfig) -> None:
    """Finish the W&B run here, while the CLI still sends library output to stderr: left to wandb's exit
    hook, its closing lines (with colour codes) would land on stdout after the result."""
    if "wandb" in cfg.logger and rank_zero_only.rank == 0:
        import wandb

        if wandb.run is not None:
            wandb.finish()
