"""From one validated config to the pieces Lightning runs: data module, task module, Trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import Logger

from trainer.config.schema import RunConfig
from trainer.data import DATA_MODULES, RecipeDataModule
from trainer.distributed.batching import BatchPlan, total_optimizer_steps
from trainer.distributed.environment import Topology
from trainer.distributed.strategy import build_strategy, offloads_optimizer
from trainer.run.callbacks import BatchCounterRescale, LastCheckpoint, RNGState, StopRequest, Throughput
from trainer.run.run_dir import CHECKPOINTS, LAST_CKPT
from trainer.tasks import TASKS, Task


def build_datamodule(cfg: RunConfig, plan: BatchPlan, tokenizer_path: Path | None = None) -> RecipeDataModule:
    module_cls = DATA_MODULES[cfg.task]
    kwargs: dict[str, Any] = {"tokenizer_path": tokenizer_path} if cfg.task != "image_classification" else {}
    return module_cls(cfg.data, seed=cfg.seed, micro_batch_size=plan.micro_batch_size, **kwargs)


def model_kwargs(cfg: RunConfig, facts: dict[str, Any]) -> dict[str, Any]:
    """The model's constructor arguments: recipe sizes plus runtime facts of the data."""
    model = cfg.model.model_dump(exclude={"family"})
    if cfg.model.family == "cnn":
        return {**model, "in_channels": facts["in_channels"], "num_classes": facts["num_classes"]}
    if cfg.model.family == "lstm":
        if cfg.task == "text_classification":
            return {
                **model,
                "vocab_size": facts["vocab_size"],
                "num_classes": facts["num_classes"],
                "pad_id": facts["pad_id"],
            }
        model.pop("bidirectional")
        model.pop("pooling")
        return {**model, "vocab_size": facts["vocab_size"]}
    if cfg.task == "text_classification":
        model.pop("tie_weights")
        return {
            **model,
            "vocab_size": facts["vocab_size"],
            "num_classes": facts["num_classes"],
            "max_len": cfg.data.max_length,
        }
    return {**model, "vocab_size": facts["vocab_size"], "max_len": cfg.data.block_size}


def build_task(cfg: RunConfig, facts: dict[str, Any], plan: BatchPlan, num_train_samples: int) -> Task:
    t = cfg.trainer
    return TASKS[cfg.task](
        family=cfg.model.family,
        model_kwargs=model_kwargs(cfg, facts),
        optim={**cfg.optim.model_dump(), "cpu_offload": offloads_optimizer(cfg)},
        scheduler=cfg.scheduler.model_dump(),
        schedule_steps=total_optimizer_steps(num_train_samples, plan, t.max_epochs, t.max_steps, t.limit_train_batches),
    )


def build_callbacks(cfg: RunConfig, run_dir: Path, plan: BatchPlan, stop: StopRequest) -> list[Callback]:
    ckpt = cfg.checkpoint
    return [
        ModelCheckpoint(
            dirpath=run_dir / CHECKPOINTS,
            # Metric names hold '/', so they stay out of file names.
            filename="epoch{epoch}-step{step}",
            auto_insert_metric_name=False,
            monitor=ckpt.monitor,
            mode=ckpt.mode,
            save_top_k=ckpt.save_top_k,
            save_last=False,  # last.ckpt has its own writer
            enable_version_counter=False,
        ),
        LastCheckpoint(run_dir / CHECKPOINTS / LAST_CKPT, stop, ckpt.every_n_train_steps, cfg.trainer.max_steps),
        RNGState(cfg.seed),
        BatchCounterRescale(plan.world_size, plan.grad_accum_steps),
        Throughput(plan.global_batch_size),
        LearningRateMonitor(logging_interval="step"),
    ]


def build_trainer(
    cfg: RunConfig,
    plan: BatchPlan,
    topology: Topology,
    run_dir: Path | None,
    loggers: list[Logger] | bool,
    callbacks: list[Callback],
    load_universal: bool = False,
    **overrides: Any,
) -> L.Trainer:
    args = cfg.trainer.model_dump(exclude_none=True)
    # max_steps is enforced by the LastCheckpoint callback (see there); -1 epochs: no epoch limit.
    args["max_steps"] = -1
    args["max_epochs"] = cfg.trainer.max_epochs if cfg.trainer.max_epochs is not None else -1
    args.update(accelerator=topology.accelerator, devices=topology.devices, num_nodes=topology.num_nodes)
    args.update(overrides)
    if "strategy" not in overrides:  # `trainer test` evaluates with DDP whatever trained the model
        args["strategy"] = build_strategy(cfg, plan, topology, load_universal)
    return L.Trainer(
        **args,
        accumulate_grad_batches=plan.grad_accum_steps,
        default_root_dir=str(run_dir) if run_dir else None,
        logger=loggers,
        callbacks=callbacks,
        # The data module shards the training data itself (see RecipeDataModule.train_dataloader).
        use_distributed_sampler=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
    )
