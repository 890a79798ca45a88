"""Loggers: CSV always (metrics.csv in the run directory), TensorBoard and Weights & Biases on request."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger

from trainer.config.schema import RunConfig


def build_loggers(cfg: RunConfig, run_dir: Path, wandb_id: str | None = None) -> list[Logger]:
    loggers: list[Logger] = [CSVLogger(save_dir=str(run_dir), name="", version="")]
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
