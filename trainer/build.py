"""Config -> the pieces Lightning runs: the data module, the task wrapping a model, callbacks, the Trainer."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelSummary, TQDMProgressBar
from lightning.pytorch.loggers import Logger
from lightning.pytorch.strategies import Strategy

from trainer.cluster.signals import StopRequest
from trainer.config.model_args import data_facts, model_kwargs
from trainer.config.schema import RunConfig
from trainer.data import DATA_MODULES, RecipeDataModule
from trainer.distributed.batching import BatchPlan, eval_batches, total_optimizer_steps, train_batches_per_epoch
from trainer.distributed.fsdp import check_block_classes, is_fsdp, lightning_precision
from trainer.distributed.strategy import build_strategy, is_sharded, optimizer_factory, sharding_of
from trainer.distributed.topology import Topology
from trainer.errors import UserError, error_with_place
from trainer.lifecycle.divergence import DivergenceGuard
from trainer.lifecycle.last_checkpoint import BestCheckpoints, LastCheckpoint
from trainer.lifecycle.run_dir import CHECKPOINTS, LAST_CKPT
from trainer.lifecycle.state import BatchCounterRescale, LoggedStepOnResume, RNGState
from trainer.lifecycle.throughput import Throughput
from trainer.tasks import TASKS, Task


def build_datamodule(cfg: RunConfig, plan: BatchPlan, tokenizer_path: Path | None = None) -> RecipeDataModule:
    module_cls = DATA_MODULES[cfg.task]
    kwargs: dict[str, Any] = {"tokenizer_path": tokenizer_path} if cfg.task != "image_classification" else {}
    return module_cls(cfg.data, seed=cfg.seed, micro_batch_size=plan.micro_batch_size, **kwargs)


def check_loop_settings(cfg: RunConfig, plan: BatchPlan, datamodule: RecipeDataModule) -> None:
    """The settings Lightning checks only once `fit` has begun, checked now against the real batch counts."""
    t = cfg.trainer
    train = train_batches_per_epoch(len(datamodule.train_set), plan, t.limit_train_batches)
    if train == 0:
        raise UserError(f"trainer.limit_train_batches={t.limit_train_batches} leaves no training batch; raise it")
    if isinstance(t.val_check_interval, int) and t.check_val_every_n_epoch is not None and t.val_check_interval > train:
        raise UserError(
            f"trainer.val_check_interval={t.val_check_interval} is more than the {train} training batches of an epoch; "
            "lower it, or set trainer.check_val_every_n_epoch=null to count batches across epochs"
        )
    val = eval_batches(len(datamodule.val_set), plan, t.limit_val_batches)
    if val == 0 and cfg.checkpoint.monitor.startswith("val/"):
        raise UserError(
            f"trainer.limit_val_batches={t.limit_val_batches} leaves no validation batch, but checkpoint.monitor="
            f"{cfg.checkpoint.monitor} needs one; raise it"
        )


def build_task(cfg: RunConfig, facts: dict[str, Any], plan: BatchPlan, num_train_samples: int) -> Task:
    """The task module around a freshly initialised model (pretrained or warm-start weights come later, in
    trainer.lifecycle.initial_weights, and only for a new run)."""
    t = cfg.trainer
    optim = cfg.optim.model_dump()
    if optim["fused"] is None:
        # Not under DeepSpeed, which steps its own way, nor FSDP2 (torch's foreach kernels take its DTensors), nor
        # with fp16's GradScaler, which leaves a fused optimizer's gradients scaled until its step: clipping would
        # then see scaled gradients.
        optim["fused"] = not is_sharded(t.strategy) and t.precision != "16-mixed"
    custom = cfg.model.family == "custom"
    arguments = dict(
        family=cfg.model.family,
        model_kwargs=model_kwargs(cfg, facts),
        optim=optim,
        scheduler=cfg.scheduler.model_dump(),
        schedule_steps=total_optimizer_steps(num_train_samples, plan, t.max_epochs, t.max_steps, t.limit_train_batches),
        class_path=cfg.model.class_path if custom else None,
        import_path=cfg.model.import_path if custom else None,
        facts=data_facts(cfg, facts),
    )
    try:
        task = TASKS[cfg.task](**arguments)
    except (Exception, SystemExit) as err:
        if not custom or isinstance(err, UserError):
            raise
        raise UserError(f"model.init_args: {cfg.model.class_path} could not be built with {arguments['model_kwargs']}: "
                        f"{error_with_place(err)}") from None  # fmt: skip
    task.optimizer_factory = optimizer_factory(cfg)
    if is_fsdp(t.strategy):
        check_block_classes(task.model, tuple(cfg.fsdp.block_class or ()))
        task.model_sharding = sharding_of(cfg)
    apply_performance_settings(cfg, task)
    return task


# What a model's forward must return, by task (the README's contract for your own model).
_OUTPUT_CONTRACT = {
    "image_classification": "logits [batch, num_classes]",
    "text_classification": "logits [batch, num_classes]",
    "language_modeling": "logits [batch, tokens, vocab_size]",
}


def check_model_contract(cfg: RunConfig, task: Task, datamodule: RecipeDataModule) -> None:
    """A custom model's forward gives logits of the shape its task needs, before anything is written: in eval
    mode on a batch of two training examples, then in training mode on a batch of three with a backward pass
    (a model whose training forward differs, or whose output needs no gradient). The random state, the
    gradients and the buffers (BatchNorm's running statistics) are left as they were."""
    if cfg.model.family != "custom":
        return
    model, was_training = task.model, task.model.training
    buffers = {name: value.clone() for name, value in model.named_buffers()}
    try:
        with torch.random.fork_rng(devices=[]):
            with torch.no_grad():
                _check_output(cfg, task, datamodule.example_batch(2), training=False)
            _check_output(cfg, task, datamodule.example_batch(3), training=True)
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for name, value in model.named_buffers():
                if name in buffers:
                    value.copy_(buffers[name])


def _check_output(cfg: RunConfig, task: Task, batch: dict[str, torch.Tensor], training: bool) -> None:
    inputs = task.model_inputs(batch)
    rows = int(inputs[0].shape[0])
    if cfg.task == "language_modeling":
        expected = (rows, int(inputs[0].shape[1]), task.data_fact("vocab_size"))
    else:
        expected = (rows, task.data_fact("num_classes"))
    shapes = ", ".join(f"{list(x.shape)} {str(x.dtype).removeprefix('torch.')}" for x in inputs)
    mode = "in training mode " if training else ""
    where = f"model.class_path: {cfg.model.class_path}.forward"
    try:
        output = task.model.train(training)(*inputs)
        right = torch.is_tensor(output) and output.is_floating_point() and tuple(output.shape) == expected
        if right and training:
            output.float().sum().backward()  # a gradient must reach the model's parameters
    except (Exception, SystemExit) as err:
        raise UserError(f"{where} failed {mode}on a batch of {rows} ({shapes}): {error_with_place(err)}") from None
    got = (f"shape {list(output.shape)} {str(output.dtype).removeprefix('torch.')}" if torch.is_tensor(output)
           else f"a {type(output).__name__}")  # fmt: skip
    if not right:
        raise UserError(f"{where} returned {got} {mode}for inputs {shapes}; it must return "
                        f"{_OUTPUT_CONTRACT[cfg.task]} = {list(expected)}")  # fmt: skip


def check_compile_toolchain(compile_model: bool, accelerator: str) -> None:
    """torch.compile builds its kernels at the first step, with a C++ compiler on CPU and Triton (which needs a C
    compiler) on a GPU; without them it fails there, deep in a traceback. Checked before anything is written."""
    if not compile_model:
        return
    fix = "install one, or set performance.compile=false"
    if accelerator == "cpu":
        from torch._inductor.cpp_builder import get_cpp_compiler

        try:
            get_cpp_compiler()
        except Exception:  # torch's InvalidCxxCompiler, or whatever its search meets
            raise UserError(f"performance.compile=true needs a C++ compiler on CPU (g++ or $CXX); {fix}") from None
        return
    if importlib.util.find_spec("triton") is None:
        raise UserError("performance.compile=true needs Triton on a GPU; install it, or set performance.compile=false")
    if not any(shutil.which(cc) for cc in (os.environ.get("CC"), "gcc", "clang") if cc):  # Triton's own search
        raise UserError(f"performance.compile=true needs a C compiler for Triton (gcc, clang or $CC); {fix}")


def apply_performance_settings(cfg: RunConfig, task: Task) -> None:
    perf = cfg.performance
    torch.set_float32_matmul_precision(perf.float32_matmul_precision)  # process-wide, as torch has it
    if perf.channels_last:
        task.model.to(memory_format=torch.channels_last)  # the images follow it in the model (see models/cnn.py)
    if perf.compile:
        task.model.compile()  # in place: the state dict keeps its keys, checkpoints stay plain


def show_flops_in_the_model_summary(cfg: RunConfig, task: Task, datamodule: RecipeDataModule) -> None:
    """Lightning's model summary counts forward FLOPs when the module has an example input (else it prints 0).

    Not under DeepSpeed or FSDP2, whose summary would run the sharded module on rank 0 alone, nor in a true
    precision other than float32 (16, bf16, 64), where the float32 example would reach the model uncast.
    """
    float32_weights = cfg.trainer.precision in ("32", "32-true", "bf16-mixed", "16-mixed")
    # Nor a compiled model: the summary's FLOP counter would compile it once more, for nothing.
    if float32_weights and not is_sharded(cfg.trainer.strategy) and not cfg.performance.compile:
        task.example_input_array = task.model_inputs(datamodule.example_batch())


def build_callbacks(cfg: RunConfig, run_dir: Path, plan: BatchPlan, stop: StopRequest) -> list[Callback]:
    ckpt = cfg.checkpoint
    return [
        RNGState(cfg.seed),
        DivergenceGuard(),
        BatchCounterRescale(plan.world_size, plan.grad_accum_steps),
        LoggedStepOnResume(),
        Throughput(plan.global_batch_size, cfg.trainer.precision),
        LearningRateMonitor(logging_interval="step"),
        # Checkpoint callbacks run last, in this order: the best-k record is current when last.ckpt is written.
        BestCheckpoints(
            dirpath=run_dir / CHECKPOINTS,
            # Metric names hold '/', so they stay out of file names.
            filename="epoch{epoch}-step{step}",
            auto_insert_metric_name=False,
            monitor=ckpt.monitor,
            mode=ckpt.mode,
            save_top_k=ckpt.save_top_k,
            save_last=False,  # last.ckpt has its own writer
            enable_version_counter=False,
            save_on_train_epoch_end=False,  # right after each validation, before last.ckpt records it
        ),
        LastCheckpoint(run_dir / CHECKPOINTS / LAST_CKPT, stop, ckpt.every_n_train_steps, cfg.trainer.max_steps),
    ]


def build_trainer(
    cfg: RunConfig,
    plan: BatchPlan,
    topology: Topology,
    run_dir: Path | None,
    loggers: list[Logger] | bool,
    callbacks: list[Callback],
    load_universal: bool = False,
    strategy: str | Strategy | None = None,
    total_steps: int | None = None,
) -> L.Trainer:
    """`strategy`: instead of the recipe's (`trainer test` evaluates with DDP whatever trained the model).
    `total_steps`: the optimizer steps the run trains to, when it trains."""
    args = cfg.trainer.model_dump(exclude_none=True)
    if total_steps is not None and total_steps < cfg.trainer.log_every_n_steps:
        # A run shorter than its logging interval would log no training step (no curve in its report): it
        # logs ten times instead, or every step.
        args["log_every_n_steps"] = max(1, total_steps // 10)
    # max_steps is enforced by the LastCheckpoint callback (see there); -1 epochs: no epoch limit.
    args["max_steps"] = -1
    args["max_epochs"] = cfg.trainer.max_epochs if cfg.trainer.max_epochs is not None else -1
    args.update(accelerator=topology.accelerator, devices=topology.devices, num_nodes=topology.num_nodes)
    args["strategy"] = strategy if strategy is not None else build_strategy(cfg, plan, topology, load_universal)
    if strategy is None and is_fsdp(cfg.trainer.strategy):
        args["precision"] = lightning_precision(cfg.trainer.precision)
    # Lightning 2.6 picks Rich's progress bar and model summary whenever `rich` is installed (transformers brings
    # it in): the same run would then print differently from one environment to the next. These are its defaults
    # without rich, named.
    shown: list[Callback] = [TQDMProgressBar()] if cfg.trainer.enable_progress_bar else []
    if run_dir is not None:
        shown.append(ModelSummary())
    try:
        return L.Trainer(
            **args,
            accumulate_grad_batches=plan.grad_accum_steps,
            default_root_dir=str(run_dir) if run_dir else None,
            logger=loggers,
            callbacks=[*callbacks, *shown],
            # The data module shards the training data itself (see RecipeDataModule.train_dataloader).
            use_distributed_sampler=False,
            enable_checkpointing=any(isinstance(c, BestCheckpoints) for c in callbacks),
            enable_model_summary=run_dir is not None,
        )
    except (MisconfigurationException, ValueError) as err:
        raise UserError(f"invalid trainer settings: {str(err).splitlines()[0]}") from None
