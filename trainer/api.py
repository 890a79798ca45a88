"""The importable entry points: `fit`, `test`, `generate`, `export`. The CLI is a thin shell around these.

Each reads top to bottom as set-up -> run -> finish. Every check that can fail on bad input comes
before anything is written; several processes (under torchrun) agree on where the run starts through
one broadcast from rank 0.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.strategies import DDPStrategy

from trainer.build import (
    build_callbacks,
    build_datamodule,
    build_task,
    build_trainer,
    check_compile_toolchain,
    check_loop_settings,
    check_model_contract,
    show_flops_in_the_model_summary,
)
from trainer.cluster.env import run_dir_note, slurm_job_id
from trainer.cluster.peers import is_lost_peer, where_to_go_on
from trainer.cluster.requeue import RequeueDecision, decide_requeue, requeue
from trainer.cluster.signals import StopRequest
from trainer.config import RunConfig, load_config_file
from trainer.config.model_args import check_model_settings, model_kwargs
from trainer.data import RecipeDataModule
from trainer.data.sources import check_source
from trainer.data.tokenizer import TOKENIZER_FILE, load_tokenizer
from trainer.distributed.batching import BatchPlan, plan_batches
from trainer.distributed.process_group import init_process_group, rank_hostnames, rank_zero_decides, rank_zero_first
from trainer.distributed.strategy import check_on_accelerator, check_strategy_settings, zero_settings
from trainer.distributed.topology import Topology, resolve_topology
from trainer.errors import PeerLost, TrainingDiverged, UserError
from trainer.export import EXPORT_DIRS, FORMATS, ExportSource, export_model
from trainer.extras import check_onnx_extra
from trainer.host_memory import reuse_freed_host_memory
from trainer.lifecycle.checkpoints import (
    file_digest,
    plain_model_state,
    read_info,
    read_training_checkpoint,
    verified_digest,
    verify_checkpoint,
)
from trainer.lifecycle.claim import RunClaim
from trainer.lifecycle.initial_weights import check_init_from, load_initial_weights, warm_start_tokenizer
from trainer.lifecycle.last_checkpoint import RunStopped
from trainer.lifecycle.run_config import fit_config, resume_command, slurm_resume_command
from trainer.lifecycle.run_dir import (
    CHECKPOINTS,
    CONFIG_FILE,
    INPUTS_FILE,
    LAST_CKPT,
    SUMMARY_FILE,
    WANDB_ID_FILE,
    existing_checkpoint,
    newest_complete_checkpoint,
    run_dir_of,
)
from trainer.lifecycle.start import (
    CommitAtTrainStart,
    RunStart,
    check_checkpoint_fits,
    check_the_run_can_go_on,
    decide_start,
    write_run_files,
)
from trainer.lifecycle.summary import metrics_with_prefix, write_summary
from trainer.lifecycle.throughput import Throughput, checkpoint_seconds
from trainer.lifecycle.universal import (
    consolidate_fsdp,
    consolidated_path,
    convert_to_universal,
    fsdp_to_plain,
    needs_conversion,
)
from trainer.loggers import build_loggers, close_loggers
from trainer.model_io import TOKENIZER_SHA256, check_tokenizer, model_io, never_generated
from trainer.models.generate import sample
from trainer.predict.inputs import prompt_ids
from trainer.quiet import print_on_a_line_of_its_own, silence_dependency_noise
from trainer.report.saved_confusion import Confusion, class_names, save_confusion
from trainer.tasks import TASKS, Task

silence_dependency_noise()


@dataclass
class FitRun:
    """Everything a fit set up, for the run and the finish."""

    cfg: RunConfig
    start: RunStart
    plan: BatchPlan
    datamodule: RecipeDataModule
    task: Task
    trainer: L.Trainer
    stop: StopRequest
    claim: RunClaim  # rank 0's hold on the run directory (an empty one on other ranks)
    started: float
    wandb_id: str | None = None
    hosts: list[str] = field(default_factory=list)  # each rank's hostname, by rank
    stopped_by: str | None = None
    val_metrics: dict[str, float] | None = None
    test_metrics: dict[str, float] | None = None  # when not from `trainer` (a ZeRO-3 run's: see _test_consolidated)

    def callback(self, kind: type) -> Any:
        return next(c for c in self.trainer.callbacks if isinstance(c, kind))


def fit(cfg: RunConfig, callbacks: list[L.Callback] | None = None) -> dict[str, Any]:
    """Train, evaluate on the test split when there is one, and write the run directory. Returns the summary.

    `callbacks` are added to the recipe's own (Lightning callbacks, for library users). A run stopped by
    SIGTERM, SIGINT or SIGUSR1 saves last.ckpt at a step boundary and skips the evaluations that remain
    (`stopped_by` in the summary). Under torchrun every rank calls this; rank 0 alone writes the config,
    logs and summary.
    """
    # The stop handlers go in first: a SLURM warning signal during set-up stops the run at its first
    # step, and they cover the final evaluations too (a signal there must not fall to Lightning's).
    with StopRequest().installed() as stop:
        run = _setup_fit(cfg, stop, callbacks or [])
        try:
            with _undone_unless_training_started(run):
                _write_run(run)
                _note_run_dir(run)
                _train(run)
            return _finish_fit(run)
        except RuntimeError as err:
            if not is_lost_peer(err):
                raise
            where = run.start.run_dir if run.claim.committed else None
            raise PeerLost(f"another process of the run stopped answering (it died, or its node went down); "
                           f"{where_to_go_on(where, cfg.name)}") from None  # fmt: skip
        finally:
            close_loggers(cfg)  # a failed run's too (a no-op once finished)
            run.claim.release()


def _setup_fit(cfg: RunConfig, stop: StopRequest, extra_callbacks: list[L.Callback]) -> FitRun:
    started = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.performance.reuse_host_memory:
        reuse_freed_host_memory()  # process-wide, before the data and the model are built (trainer/host_memory.py)
    topology = resolve_topology(cfg.trainer.accelerator, cfg.trainer.devices, cfg.trainer.num_nodes)
    plan = plan_batches(cfg.data.global_batch_size, cfg.data.micro_batch_size, topology.world_size)
    check_strategy_settings(cfg)
    check_on_accelerator(cfg, topology.accelerator)
    check_compile_toolchain(cfg.performance.compile, topology.accelerator)
    check_model_settings(cfg)
    check_init_from(cfg)
    check_source(cfg.data)
    init_process_group(topology.accelerator)

    claim = RunClaim()

    def decide() -> RunStart:  # rank 0 alone; its claim on the directory stays with it for the whole run
        nonlocal claim
        start, claim = decide_start(cfg)
        return start

    start = rank_zero_decides(decide)
    try:
        run = _build_fit(cfg, start, topology, plan, stop, extra_callbacks, claim, started)
        run.hosts = rank_hostnames()
        return run
    except BaseException:
        claim.roll_back()
        raise


def _build_fit(
    cfg: RunConfig,
    start: RunStart,
    topology: Topology,
    plan: BatchPlan,
    stop: StopRequest,
    extra_callbacks: list[L.Callback],
    claim: RunClaim,
    started: float,
) -> FitRun:
    saved = read_info(start.checkpoint) if start.checkpoint is not None else None  # read once: a DeepSpeed state
    load_universal = saved is not None and needs_conversion(
        start.checkpoint,
        saved.zero,
        cfg.trainer.strategy,
        zero_settings(cfg),
        plan.world_size,
        start.run_dir,
        saved.fsdp,
    )
    if load_universal:
        with rank_zero_first():
            if _is_rank_zero():
                convert_to_universal(start.checkpoint)
    if saved is not None and fsdp_to_plain(saved.fsdp, cfg.trainer.strategy):
        with rank_zero_first():
            if _is_rank_zero():
                consolidate_fsdp(start.checkpoint)
        start = replace(start, checkpoint=consolidated_path(start.checkpoint))

    if saved is not None:  # the model's settings now, its data-decided sizes below
        check_checkpoint_fits(cfg, saved, start.checkpoint)
    # A resumed run keeps its own tokenizer; an old run that overwrite=true replaces does not pass its on.
    saved_tokenizer = start.run_dir / TOKENIZER_FILE
    keep_tokenizer = saved_tokenizer.is_file() and not start.replaces_old_run
    tokenizer_path = saved_tokenizer if keep_tokenizer else warm_start_tokenizer(cfg)  # a warm start: its source's
    if cfg.task == "image_classification":
        tokenizer_path = None
    datamodule = build_datamodule(cfg, plan, tokenizer_path=tokenizer_path)
    with rank_zero_first(per_node=True):
        datamodule.prepare_data()
    datamodule.check_trainable(plan.global_batch_size)
    check_loop_settings(cfg, plan, datamodule)
    task = build_task(cfg, datamodule.facts(), plan, len(datamodule.train_set))
    check_model_contract(cfg, task, datamodule)
    if start.checkpoint is None:
        loaded = load_initial_weights(cfg, task.model)
        if loaded is not None and _is_rank_zero():
            print(f"trainer: {loaded}", file=sys.stderr, flush=True)
    show_flops_in_the_model_summary(cfg, task, datamodule)
    if saved is not None:
        check_checkpoint_fits(cfg, saved, start.checkpoint, task.hparams.model_kwargs)
        if cfg.resume is not None:
            check_the_run_can_go_on(cfg, saved, task.hparams.schedule_steps, start.run_dir)

    wandb_id = _wandb_id(start.run_dir) if "wandb" in cfg.logger else None
    callbacks = [*build_callbacks(cfg, start.run_dir, plan, stop), CommitAtTrainStart(claim, stop), *extra_callbacks]
    loggers = build_loggers(cfg, start.run_dir, wandb_id)
    trainer = build_trainer(cfg, plan, topology, start.run_dir, loggers, callbacks, load_universal=load_universal,
                            total_steps=task.hparams.schedule_steps)  # fmt: skip
    return FitRun(cfg, start, plan, datamodule, task, trainer, stop, claim, started, wandb_id)


def _write_run(run: FitRun) -> None:
    """Every input is checked: from here on the run writes (rank 0)."""
    if not run.trainer.is_global_zero:
        return
    write_run_files(run.cfg, run.start, run.claim, run.wandb_id)
    tokenizer = getattr(run.datamodule, "tokenizer", None)
    facts = run.datamodule.inference_facts()
    if tokenizer is not None:
        tokenizer.save(str(run.start.run_dir / TOKENIZER_FILE))
        # Which tokenizer this is: another run's, of the same vocabulary size, would otherwise pass unnoticed.
        facts[TOKENIZER_SHA256] = file_digest(run.start.run_dir / TOKENIZER_FILE)
    (run.start.run_dir / INPUTS_FILE).write_text(json.dumps(facts, indent=2) + "\n")
    for logger in run.trainer.loggers:
        logger.log_hyperparams(run.cfg.model_dump(mode="json"))
    print(f"trainer: run directory {run.start.run_dir}", file=sys.stderr, flush=True)


def _note_run_dir(run: FitRun) -> None:
    """For the launcher of this node's workers (`trainer fit`'s own, or trainer.cluster.torchrun), which names
    the run and its checkpoint if a worker dies: from each node's first worker, since each node's launcher
    reads its own note."""
    note = run_dir_note()
    if note is not None and run.trainer.local_rank == 0:
        Path(note).write_text(str(run.start.run_dir.resolve()))


def _train(run: FitRun) -> None:
    """trainer.fit, then the final validation (when training ended between two) and the test split."""
    trainer, task, datamodule = run.trainer, run.task, run.datamodule
    try:
        try:
            trainer.fit(task, datamodule=datamodule, ckpt_path=run.start.checkpoint, weights_only=True)
        except (MisconfigurationException, ValueError) as err:
            if run.stop.training:  # a failure during training is not a setting's
                raise
            # Lightning checks some settings only as `fit` begins (val_check_interval against the batches).
            raise UserError(f"invalid trainer settings: {str(err).splitlines()[0]}") from None
        if run.callback(Throughput).last_val_step != trainer.global_step:
            # Training stopped between validations: the summary's val metrics must describe the final weights.
            trainer.validate(task, datamodule=datamodule, verbose=False)
        run.val_metrics = metrics_with_prefix(trainer, "val/")
        if datamodule.test_set is not None:
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            if best and run.cfg.trainer.strategy.startswith("deepspeed_stage_3"):
                run.test_metrics, tested = _test_consolidated(run, Path(best))
            else:
                trainer.test(task, datamodule=datamodule, ckpt_path=best or None, weights_only=True, verbose=False)
                tested = task
            if best and trainer.is_global_zero:
                _save_test_confusion(run, tested, Path(best))
    except RunStopped:
        run.stopped_by = run.stop.signal_name
    except TrainingDiverged as err:
        last = newest_complete_checkpoint(run.start.run_dir)
        saved = f"the last checkpoint, {last}, is from before it" if last else "no checkpoint was written before it"
        raise TrainingDiverged(f"{err}; {saved}") from None


def _save_test_confusion(run: FitRun, tested: Task, best: Path) -> None:
    """A classifier's test counts by class, for `trainer report` (trainer/report/saved_confusion.py)."""
    counts = getattr(tested, "test_confusion_counts", None)
    if counts is None:
        return
    names = class_names(run.datamodule.inference_facts().get("label_names"), len(counts))
    save_confusion(run.start.run_dir, Confusion(counts, names, "test", best))


def _test_consolidated(run: FitRun, best: Path) -> tuple[dict[str, float], Task]:
    """The best checkpoint of a ZeRO-3 run, evaluated as `trainer test` does it: consolidated into the plain model
    and sharded over the ranks with DDP. DeepSpeed cannot load a ZeRO-3 checkpoint into the inference engine
    Lightning's `trainer.test(ckpt_path=...)` builds (DeepSpeedZeRoOffload has no _restore_from_bit16_weights:
    deepspeedai/DeepSpeed#7272, open in 0.19.8; tests/test_distributed.py fails if the workaround is dropped)."""
    cfg = run.cfg
    task = task_from_checkpoint(cfg, best)
    topology = resolve_topology(cfg.trainer.accelerator, cfg.trainer.devices, cfg.trainer.num_nodes)
    strategy = _ddp_for(topology) if topology.world_size > 1 else "auto"
    tester = build_trainer(cfg, run.plan, topology, None, False, [], strategy=strategy)
    tester.test(task, datamodule=run.datamodule, verbose=False)
    return metrics_with_prefix(tester, "test/"), task


@contextlib.contextmanager
def _undone_unless_training_started(run: FitRun) -> Iterator[None]:
    """A failure or Ctrl-C before training starts leaves the run directory as it was (see RunClaim)."""
    try:
        yield
    except BaseException:
        run.claim.roll_back()  # a no-op once training has started
        raise


def _finish_fit(run: FitRun) -> dict[str, Any]:
    trainer, cfg = run.trainer, run.cfg
    throughput = run.callback(Throughput)
    summary = {
        "recipe": cfg.name,
        "run_dir": str(run.start.run_dir),
        "val": run.val_metrics if run.val_metrics is not None else metrics_with_prefix(trainer, "val/"),
        "test": {} if run.stopped_by else (run.test_metrics or metrics_with_prefix(trainer, "test/")),
        "global_step": trainer.global_step,
        "epochs": trainer.current_epoch,
        "world_size": run.plan.world_size,
        "hosts": run.hosts,  # each rank's hostname, by rank
        "global_batch_size": run.plan.global_batch_size,
        "micro_batch_size": run.plan.micro_batch_size,
        "grad_accum_steps": run.plan.grad_accum_steps,
        "train_seconds": round(throughput.train_seconds, 3),  # training steps only
        "val_seconds": round(throughput.val_seconds, 3),  # the validations during training
        "checkpoint_seconds": round(checkpoint_seconds(trainer), 3),
        "wall_seconds": round(time.perf_counter() - run.started, 3),
        **throughput.figures(),  # samples_per_second, tokens_per_second, flops_per_sample, mfu
        "peak_gpu_memory_bytes": throughput.peak_gpu_memory_bytes,
        "best_checkpoint": _best_checkpoint(trainer),
        "best_score": _best_score(trainer),
        "stopped_by": run.stopped_by,
    }
    continue_with = f"`{resume_command(cfg.name, run.start.run_dir)}`"
    slurm_continue_with = (f"`{slurm_resume_command(cfg.name, run.start.run_dir)}` with this job's --nodes and "
                           "--gpus-per-node or --ntasks-per-node")  # fmt: skip
    decision = decide_requeue(cfg.slurm, run.stopped_by, slurm_continue_with)
    summary["requeued"] = bool(decision and decision.requeue)
    if trainer.is_global_zero:
        write_summary(run.start.run_dir, summary)
        close_loggers(cfg)  # before a requeue ends this attempt
        if run.stopped_by and decision is None:
            last = run.start.run_dir / CHECKPOINTS / LAST_CKPT
            print_on_a_line_of_its_own(f"trainer: stopped by {run.stopped_by} at step {trainer.global_step}; "
                                       f"checkpoint {last}; continue with {continue_with}",
                                       after_bars=trainer.progress_bar_callback is not None)  # fmt: skip
    if decision is not None:
        _requeue(trainer, decision, summary, run.start.run_dir)
    return summary


def _requeue(trainer: L.Trainer, decision: RequeueDecision, summary: dict[str, Any], run_dir: Path) -> None:
    """Rank 0 requeues the SLURM job once every rank is done: SLURM ends this attempt at once."""
    if trainer.is_global_zero:
        print_on_a_line_of_its_own(f"trainer: {decision.message}", after_bars=trainer.progress_bar_callback is not None)
    if not decision.requeue:
        return
    trainer.strategy.barrier("requeue")
    if trainer.is_global_zero:
        job = slurm_job_id()
        assert job is not None  # decide_requeue made sure
        error = requeue(job)
        if error is not None:
            summary["requeued"] = False
            write_summary(run_dir, summary)
            print(f"trainer: could not requeue SLURM job {job}: {error}; resume with "
                  f"`{resume_command(summary['recipe'], run_dir)}`", file=sys.stderr, flush=True)  # fmt: skip


def test(cfg: RunConfig) -> dict[str, float]:
    """Evaluate a checkpoint (Lightning file or DeepSpeed directory) on the recipe's test split, or its
    validation split when it has no test split. Under torchrun the evaluation is sharded over the ranks."""
    ckpt_path = existing_checkpoint(cfg.ckpt, "test")
    check_source(cfg.data)
    topology = resolve_topology(cfg.trainer.accelerator, cfg.trainer.devices, cfg.trainer.num_nodes)
    plan = plan_batches(cfg.data.global_batch_size, cfg.data.micro_batch_size, topology.world_size)
    init_process_group(topology.accelerator)
    rank_zero_decides(lambda: verify_checkpoint(ckpt_path))
    info = read_info(ckpt_path)
    check_checkpoint_fits(cfg, info, ckpt_path)  # the model first: the data may not even be of its kind
    datamodule = build_datamodule(cfg, plan, tokenizer_path=saved_tokenizer(cfg, ckpt_path))
    with rank_zero_first(per_node=True):
        datamodule.prepare_data()
    check_checkpoint_fits(cfg, info, ckpt_path, model_kwargs(cfg, datamodule.facts()))
    task = task_from_checkpoint(cfg, ckpt_path)
    # Evaluation shards the data over ranks; DDP suffices whatever strategy trained the model.
    strategy = _ddp_for(topology) if topology.world_size > 1 else "auto"
    trainer = build_trainer(cfg, plan, topology, None, False, [], strategy=strategy)
    with StopRequest().installed(signals=(signal.SIGINT,)):  # Ctrl-C: exit 130, no Lightning shutdown message
        if datamodule.test_set is None:
            trainer.validate(task, datamodule=datamodule, verbose=False)
            return metrics_with_prefix(trainer, "val/")
        trainer.test(task, datamodule=datamodule, verbose=False)
        return metrics_with_prefix(trainer, "test/")


def generate(cfg: RunConfig) -> str:
    """Sample text from a language-model checkpoint, starting from `generate.prompt`."""
    if cfg.task != "language_modeling":
        raise UserError(f"`trainer generate` needs a language-modelling recipe; {cfg.name!r} does {cfg.task}")
    ckpt_path = existing_checkpoint(cfg.ckpt, "generate")
    verify_checkpoint(ckpt_path)
    check_checkpoint_fits(cfg, read_info(ckpt_path), ckpt_path)
    task = task_from_checkpoint(cfg, ckpt_path)
    tokenizer_path = saved_tokenizer(cfg, ckpt_path)
    assert tokenizer_path is not None
    tokenizer = load_tokenizer(tokenizer_path)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = task.model.to(device).eval()
    ids, _ = prompt_ids(tokenizer, cfg.generate.prompt)  # what the model never saw left out, and said
    input_ids = torch.tensor([ids], device=device)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    # The context the model was trained on: a Transformer has no positions beyond it.
    facts = task.hparams.get("facts") or {}
    context_len = task.hparams.model_kwargs.get("max_len") or facts.get("block_size") or cfg.data.block_size
    output = sample(
        model,
        input_ids,
        cfg.generate.max_new_tokens,
        context_len=context_len,
        temperature=cfg.generate.temperature,
        top_k=cfg.generate.top_k,
        generator=generator,
        suppress_ids=never_generated(tokenizer),
    )
    return tokenizer.decode(output[0].tolist())


def export(run_dir: Path, ckpt: str | None = None, fmt: str = "safetensors", out_dir: Path | None = None) -> Path:
    """A run's checkpoint (last.ckpt unless `ckpt`) as one self-contained folder: run_dir/export/ for
    safetensors, run_dir/export-onnx/ and run_dir/export-torchscript/ for the graphs, unless `out_dir`."""
    if fmt not in FORMATS:
        raise UserError(f"format={fmt!r} is not an export format; use one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        check_onnx_extra("format=onnx")
    source = export_source(run_dir, ckpt)
    return export_model(source, fmt, out_dir if out_dir is not None else run_dir / EXPORT_DIRS[fmt])


def export_source(run_dir: Path, ckpt: str | None = None) -> ExportSource:
    """A run's checkpoint, checked, with what its model takes and gives (for export and predict)."""
    if not (run_dir / CONFIG_FILE).is_file():
        what = "does not exist" if not run_dir.exists() else f"is not a run directory (no {CONFIG_FILE})"
        raise UserError(f"{str(run_dir)!r} {what}; give a run directory written by `trainer fit`")
    run_dir = run_dir.resolve()  # the manifest records where it came from, whatever the working directory
    ckpt_path = Path(ckpt).expanduser().resolve() if ckpt else run_dir / CHECKPOINTS / LAST_CKPT
    if not ckpt_path.exists():
        hint = "give the path of one (relative to here, not to the run)" if ckpt else "train first or name another"
        raise UserError(f"checkpoint {str(ckpt_path)!r} does not exist; {hint}")
    cfg = load_config_file(run_dir / CONFIG_FILE)
    digest = verified_digest(ckpt_path)
    check_checkpoint_fits(cfg, read_info(ckpt_path), ckpt_path)
    checkpoint = read_training_checkpoint(ckpt_path)
    tokenizer_path = run_dir / TOKENIZER_FILE
    facts = _inference_facts(cfg, run_dir)
    suppress: list[int] = []
    if tokenizer_path.is_file():
        check_tokenizer(tokenizer_path, facts.get(TOKENIZER_SHA256), run_dir / INPUTS_FILE)
        tokenizer = load_tokenizer(tokenizer_path)
        suppress = never_generated(tokenizer)
    io = model_io(cfg, model_sizes(checkpoint.hparams), facts, suppress)
    return ExportSource(run_dir, ckpt_path, digest, checkpoint, io, _final_metrics(run_dir))


def model_sizes(hparams: dict[str, Any]) -> dict[str, Any]:
    """What the model takes and gives (classes, channels, vocabulary, pad id): its constructor's arguments, with
    the data's facts where the constructor does not take them (a custom model), and a Transformers config's
    vocabulary (the logits' width, which may exceed the tokenizer's)."""
    kwargs = hparams["model_kwargs"]
    sizes = {**(hparams.get("facts") or {}), **kwargs}
    if isinstance(kwargs.get("config"), dict) and "vocab_size" in kwargs["config"]:
        sizes["vocab_size"] = kwargs["config"]["vocab_size"]
    return sizes


def _inference_facts(cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
    """The run's inputs.json; a run made before it existed gets its facts from its data, once."""
    path = run_dir / INPUTS_FILE
    if path.is_file():
        return json.loads(path.read_text())
    tokenizer = run_dir / TOKENIZER_FILE
    plan = plan_batches(cfg.data.global_batch_size, cfg.data.micro_batch_size, 1)
    datamodule = build_datamodule(cfg, plan, tokenizer_path=tokenizer if tokenizer.is_file() else None)
    return datamodule.inference_facts()


def _final_metrics(run_dir: Path) -> dict[str, Any]:
    path = run_dir / SUMMARY_FILE
    if not path.is_file():
        return {}
    summary = json.loads(path.read_text())
    return {**(summary.get("val") or {}), **(summary.get("test") or {})}


# ----------------------------------------------------------------------------- helpers


def _is_rank_zero() -> bool:
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0


def _wandb_id(run_dir: Path) -> str:
    """The W&B run of this run directory: kept across resumes, new for a new run."""
    import uuid

    saved = run_dir / WANDB_ID_FILE
    return saved.read_text().strip() if saved.is_file() else uuid.uuid4().hex[:12]


def _best_checkpoint(trainer: L.Trainer) -> str | None:
    callback = trainer.checkpoint_callback
    return str(callback.best_model_path) if callback and callback.best_model_path else None


def _best_score(trainer: L.Trainer) -> float | None:
    """The monitored metric of the best checkpoint: `trainer runs` shows it without reading metrics.csv."""
    callback = trainer.checkpoint_callback
    score = callback.best_model_score if callback else None
    return round(float(score), 6) if score is not None and math.isfinite(float(score)) else None


def task_from_checkpoint(cfg: RunConfig, ckpt_path: Path) -> Task:
    """The task module of a checkpoint (a file or a DeepSpeed folder), its weights loaded, for `cfg`'s recipe."""
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


def saved_tokenizer(cfg: RunConfig, ckpt_path: Path) -> Path | None:
    """The tokenizer.json of the run a checkpoint belongs to (None for images)."""
    if cfg.task == "image_classification":
        return None
    run_dir = run_dir_of(ckpt_path)
    path = (run_dir or ckpt_path.resolve().parent.parent) / TOKENIZER_FILE
    if not path.is_file():
        raise UserError(f"no {TOKENIZER_FILE} beside checkpoint {str(ckpt_path)!r}; keep the run directory whole")
    return path


# The name this entry point had before the run's configs moved to trainer.lifecycle.run_config.
resolve_fit_config = fit_config
