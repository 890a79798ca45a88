"""The importable entry points: `fit`, `test`, `generate`. The CLI is a thin shell around these."""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_only

from trainer.build import build_callbacks, build_datamodule, build_task, build_trainer
from trainer.checkpoints import (
    EXPORT_DIR,
    check_resumable,
    export_model,
    plain_model_state,
    read_training_checkpoint,
)
from trainer.config import RunConfig, load_config, load_config_file, to_yaml
from trainer.data.sources import check_source
from trainer.data.tokenizer import PAD, TOKENIZER_FILE, UNK, load_tokenizer
from trainer.distributed.batching import BatchPlan, plan_batches
from trainer.distributed.deepspeed_checkpoint import convert_to_universal, needs_conversion
from trainer.distributed.environment import (
    RunPlace,
    Topology,
    agree_on_run_place,
    exported_run_place,
    job_identity,
    rank_zero_first,
    resolve_topology,
    restart_count,
)
from trainer.distributed.requeue import RequeueDecision, decide_requeue, requeue, slurm_job_id
from trainer.distributed.strategy import check_strategy_settings
from trainer.errors import UserError
from trainer.models.generate import sample
from trainer.run.callbacks import LastCheckpoint, StopRequest, Throughput
from trainer.run.loggers import build_loggers
from trainer.run.run_dir import (
    CHECKPOINTS,
    CONFIG_FILE,
    JOB_FILE,
    LAST_CKPT,
    SUMMARY_FILE,
    check_checkpoint,
    check_new_run_dir,
    default_run_dir,
    find_resume_dir,
    newest_complete_checkpoint,
    run_dir_of,
    same_job,
)
from trainer.tasks import TASKS, Task

WANDB_ID_FILE = "wandb_run_id"


def resolve_fit_config(recipe: str, overrides: list[str]) -> RunConfig:
    """The config of a fit: the recipe plus overrides, or, with `resume=`, the stopped run's own
    saved config plus the same overrides (so `trainer.max_steps=...` can extend it)."""
    cfg = load_config(recipe, overrides)
    if cfg.resume is None:
        return cfg
    run_dir = find_resume_dir(cfg.resume, cfg.name or recipe)
    return load_config_file(run_dir / CONFIG_FILE, [*overrides, f"resume={run_dir}"])


def fit(cfg: RunConfig, callbacks: list[L.Callback] | None = None) -> dict[str, Any]:
    """Train, evaluate on the test split when there is one, and write the run directory. Returns the summary.

    `callbacks` are added to the recipe's own (Lightning callbacks, for library users).
    A run stopped by SIGTERM, SIGINT or SIGUSR1 saves last.ckpt at a step boundary, skips the final
    evaluation and says so in the summary (`stopped_by`). On several processes every rank calls
    this; rank 0 alone writes the config, logs and summary.
    """
    # The stop handlers go in first: a SLURM warning signal during data preparation stops the run at its
    # first step, and they cover the final evaluations too (a signal there must not fall to Lightning's).
    stop_request = StopRequest()
    with stop_request.installed():
        return _fit(cfg, stop_request, callbacks or [])


def _fit(cfg: RunConfig, stop_request: StopRequest, callbacks: list[L.Callback]) -> dict[str, Any]:
    started = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    topology = resolve_topology(cfg.trainer.accelerator, cfg.trainer.devices, cfg.trainer.num_nodes)
    plan = plan_batches(cfg.data.global_batch_size, cfg.data.micro_batch_size, topology.world_size)
    check_strategy_settings(cfg)
    check_source(cfg.data)

    place = agree_on_run_place(lambda: _decide_run_place(cfg), cfg.trainer.accelerator)
    run_dir, resume_ckpt = place.run_dir, place.resume_from

    load_universal = resume_ckpt is not None and needs_conversion(resume_ckpt, plan.world_size)
    if load_universal:
        with rank_zero_first():
            if rank_zero_only.rank == 0:
                convert_to_universal(resume_ckpt)

    # Everything that can fail on bad input happens before the run directory is created.
    saved_tokenizer = run_dir / TOKENIZER_FILE
    datamodule = build_datamodule(cfg, plan, tokenizer_path=saved_tokenizer if saved_tokenizer.is_file() else None)
    with rank_zero_first(per_node=True):
        datamodule.prepare_data()
    task = build_task(cfg, datamodule.facts(), plan, len(datamodule.train_set))
    wandb_id = _wandb_id(run_dir) if "wandb" in cfg.logger else None
    callbacks = [*build_callbacks(cfg, run_dir, plan, stop_request), *callbacks]
    loggers = build_loggers(cfg, run_dir, wandb_id)
    trainer = _trainer_or_error(cfg, plan, topology, run_dir, loggers, callbacks, load_universal=load_universal)

    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG_FILE).write_text(to_yaml(cfg))
        if getattr(datamodule, "tokenizer", None) is not None:
            datamodule.tokenizer.save(str(saved_tokenizer))
        if wandb_id:
            (run_dir / WANDB_ID_FILE).write_text(wandb_id)
        if job_identity() is not None:
            (run_dir / JOB_FILE).write_text(job_identity())
        for logger in trainer.loggers:
            logger.log_hyperparams(cfg.model_dump(mode="json"))

    throughput = next(c for c in callbacks if isinstance(c, Throughput))
    stop = next(c for c in callbacks if isinstance(c, LastCheckpoint))
    with exported_run_place(place):
        trainer.fit(task, datamodule=datamodule, ckpt_path=resume_ckpt, weights_only=True)
    if not stop.interrupted and throughput.last_val_step != trainer.global_step:
        # Training stopped between validations (max_steps mid-epoch): the summary's val metrics
        # must describe the final weights.
        trainer.validate(task, datamodule=datamodule, verbose=False)
    val_metrics = _metrics(trainer, "val/")
    test_metrics: dict[str, float] = {}
    if datamodule.test_set is not None and not stop.interrupted:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        trainer.test(task, datamodule=datamodule, ckpt_path=best or None, weights_only=True, verbose=False)
        test_metrics = _metrics(trainer, "test/")

    summary = {
        "recipe": cfg.name,
        "run_dir": str(run_dir),
        "val": val_metrics,
        "test": test_metrics,
        "global_step": trainer.global_step,
        "epochs": trainer.current_epoch,
        "world_size": plan.world_size,
        "global_batch_size": plan.global_batch_size,
        "micro_batch_size": plan.micro_batch_size,
        "grad_accum_steps": plan.grad_accum_steps,
        "train_seconds": round(throughput.train_seconds, 3),
        "wall_seconds": round(time.perf_counter() - started, 3),
        "samples_per_second": round(throughput.samples_per_second, 2),
        "peak_gpu_memory_bytes": throughput.peak_gpu_memory_bytes,
        "best_checkpoint": _best_checkpoint(trainer),
        "stopped_by": stop.signal_name if stop.interrupted else None,
    }
    decision = decide_requeue(cfg.slurm, summary["stopped_by"], f"`trainer fit {cfg.name} resume={run_dir}`")
    summary["requeued"] = bool(decision and decision.requeue)
    if trainer.is_global_zero:
        _write_summary(run_dir, summary)
    if decision is not None:
        _requeue(trainer, decision, summary, run_dir)
    return summary


def _requeue(trainer: L.Trainer, decision: RequeueDecision, summary: dict[str, Any], run_dir: Path) -> None:
    """Rank 0 requeues the SLURM job once every rank is done: SLURM ends this attempt at once."""
    if trainer.is_global_zero:
        print(f"trainer: {decision.message}", file=sys.stderr, flush=True)
    if not decision.requeue:
        return
    trainer.strategy.barrier("requeue")
    if trainer.is_global_zero:
        job = slurm_job_id()
        assert job is not None  # decide_requeue made sure
        error = requeue(job)
        if error is not None:
            summary["requeued"] = False
            _write_summary(run_dir, summary)
            print(
                f"trainer: could not requeue SLURM job {job}: {error}; resume with `trainer fit {summary['recipe']} "
                f"resume={run_dir}`",
                file=sys.stderr,
                flush=True,
            )


def _write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    (run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")


def _decide_run_place(cfg: RunConfig) -> RunPlace:
    """Rank 0's decision: a new run directory, the one `resume=` names, or, when the launcher restarted
    this job (torchrun elastic restart, SLURM requeue), the job's own directory and newest checkpoint."""
    if cfg.resume is not None:
        run_dir = Path(cfg.resume)
        return RunPlace(run_dir, _checked(newest_complete_checkpoint(run_dir)))
    job = job_identity()
    run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg.name or "run", job)
    if restart_count() > 0 and same_job(run_dir, job):
        # Restarted before its first checkpoint: start again in the same place.
        latest = newest_complete_checkpoint(run_dir)
        return RunPlace(run_dir, _checked(latest) if latest else None)
    check_new_run_dir(run_dir, cfg.overwrite)
    return RunPlace(run_dir)


def _checked(checkpoint: Path | None) -> Path:
    assert checkpoint is not None  # find_resume_dir made sure of one
    check_resumable(checkpoint)  # a corrupt checkpoint is a clear error before any work
    return checkpoint


def test(cfg: RunConfig) -> dict[str, float]:
    """Evaluate a checkpoint (Lightning file or DeepSpeed directory) on the recipe's test split, or its
    validation split when it has no test split. `trainer.devices=N` shards the evaluation over N processes."""
    ckpt_path = check_checkpoint(cfg.ckpt, "test")
    check_source(cfg.data)
    task = _task_from_checkpoint(cfg, ckpt_path)
    topology = resolve_topology(cfg.trainer.accelerator, cfg.trainer.devices, cfg.trainer.num_nodes)
    plan = plan_batches(cfg.data.global_batch_size, cfg.data.micro_batch_size, topology.world_size)
    datamodule = build_datamodule(cfg, plan, tokenizer_path=_saved_tokenizer(cfg, ckpt_path))
    with rank_zero_first(per_node=True):
        datamodule.prepare_data()
    # Evaluation shards the data over ranks; DDP suffices whatever strategy trained the model.
    strategy = _ddp_for(topology) if topology.world_size > 1 else "auto"
    trainer = _trainer_or_error(cfg, plan, topology, None, False, [], strategy=strategy)
    if datamodule.test_set is None:
        trainer.validate(task, datamodule=datamodule, verbose=False)
        return _metrics(trainer, "val/")
    trainer.test(task, datamodule=datamodule, verbose=False)
    return _metrics(trainer, "test/")


def generate(cfg: RunConfig) -> str:
    """Sample text from a language-model checkpoint, starting from `generate.prompt`."""
    if cfg.task != "language_modeling":
        raise UserError(f"`trainer generate` needs a language-modelling recipe; {cfg.name!r} does {cfg.task}")
    ckpt_path = check_checkpoint(cfg.ckpt, "generate")
    task = _task_from_checkpoint(cfg, ckpt_path)
    tokenizer_path = _saved_tokenizer(cfg, ckpt_path)
    assert tokenizer_path is not None
    tokenizer = load_tokenizer(tokenizer_path)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = task.model.to(device).eval()
    prompt_ids = tokenizer.encode(cfg.generate.prompt).ids
    if not prompt_ids:
        raise UserError("prompt= encodes to no tokens; give a prompt made of characters the model has seen")
    input_ids = torch.tensor([prompt_ids], device=device)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    output = sample(
        model,
        input_ids,
        cfg.generate.max_new_tokens,
        context_len=cfg.data.block_size,
        temperature=cfg.generate.temperature,
        top_k=cfg.generate.top_k,
        generator=generator,
        suppress_ids=[tokenizer.token_to_id(token) for token in (PAD, UNK)],
    )
    return tokenizer.decode(output[0].tolist())


# ----------------------------------------------------------------------------- helpers


def _task_from_checkpoint(cfg: RunConfig, ckpt_path: Path) -> Task:
    checkpoint = read_training_checkpoint(ckpt_path)
    try:
        task = TASKS[cfg.task](**checkpoint.hparams)
        # Metric states are not weights: a consolidated DeepSpeed checkpoint does not carry them.
        task.load_state_dict(checkpoint.state_dict, strict=False)
        missing = set(plain_model_state(task.state_dict())) - set(plain_model_state(checkpoint.state_dict))
        if missing:
            raise KeyError(f"missing weights {sorted(missing)[:3]}")
    except (TypeError, KeyError, RuntimeError) as err:
        raise UserError(
            f"checkpoint {str(ckpt_path)!r} does not fit recipe {cfg.name!r} ({cfg.task}): "
            f"{str(err).splitlines()[0]}; give the recipe it was trained with"
        ) from None
    return task


def _ddp_for(topology: Topology) -> DDPStrategy:
    return DDPStrategy(process_group_backend="gloo" if topology.accelerator == "cpu" else None)


def export(run_dir: Path, ckpt: str | None = None) -> Path:
    """Consolidate a run's checkpoint (last.ckpt unless `ckpt`) into run_dir/export/model.safetensors."""
    if not (run_dir / CONFIG_FILE).is_file():
        raise UserError(
            f"{str(run_dir)!r} is not a run directory (no {CONFIG_FILE}); give one written by `trainer fit`"
        )
    ckpt_path = Path(ckpt) if ckpt else run_dir / CHECKPOINTS / LAST_CKPT
    if not ckpt_path.exists():
        raise UserError(f"checkpoint {str(ckpt_path)!r} does not exist; train first or give ckpt=<path>")
    cfg = load_config_file(run_dir / CONFIG_FILE)
    return export_model(cfg.task, read_training_checkpoint(ckpt_path), run_dir, run_dir / EXPORT_DIR)


def _saved_tokenizer(cfg: RunConfig, ckpt_path: Path) -> Path | None:
    if cfg.task == "image_classification":
        return None
    path = run_dir_of(ckpt_path) / TOKENIZER_FILE
    if not path.is_file():
        raise UserError(f"no {TOKENIZER_FILE} beside checkpoint {str(ckpt_path)!r}; keep the run directory whole")
    return path


def _trainer_or_error(
    cfg: RunConfig, plan: BatchPlan, topology: Topology, run_dir: Path | None, loggers, callbacks, **overrides
):
    try:
        return build_trainer(cfg, plan, topology, run_dir, loggers, callbacks, **overrides)
    except (MisconfigurationException, ValueError, RuntimeError) as err:
        raise UserError(f"invalid trainer settings: {str(err).splitlines()[0]}") from None


def _metrics(trainer: L.Trainer, prefix: str) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith(prefix)}


def _best_checkpoint(trainer: L.Trainer) -> str | None:
    callback = trainer.checkpoint_callback
    return callback.best_model_path or None if isinstance(callback, ModelCheckpoint) else None


def _wandb_id(run_dir: Path) -> str:
    """The W&B run id stays with the run directory, so a resumed run logs into the same W&B run."""
    saved = run_dir / WANDB_ID_FILE
    if saved.is_file():
        return saved.read_text().strip()
    return uuid.uuid4().hex[:8]
