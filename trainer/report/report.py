"""`trainer report RUN_DIR`: the run's curves as PNG files and a report.md, in RUN_DIR/report/.

Everything is read from the run directory (metrics.csv, summary.json, config.yaml, the checkpoints), so a
report can be made of a run that is still training, and again whenever it has moved on: each report
replaces the previous one whole.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

from trainer.config import RunConfig, load_config_file
from trainer.errors import UserError
from trainer.lifecycle.run_dir import CONFIG_FILE, newest_complete_checkpoint
from trainer.report.output import duration, foreign_entries, number, replace_folder, table
from trainer.report.plots import confusion_figure, curve_figures, save_png
from trainer.report.run_files import MetricLog, RunFiles, best_monitored
from trainer.report.runs import run_state
from trainer.report.saved_confusion import Confusion, saved_confusion

REPORT_DIR = "report"  # inside the run directory (one of trainer.lifecycle.run_dir.RUN_ENTRIES)
REPORT_FILE = "report.md"
CONFUSION_STEM = "confusion_matrix"  # .png and .csv
CLASSIFIERS = ("image_classification", "text_classification")  # the tasks that get a confusion matrix


def write_report(path: str | Path) -> Path:
    """Write RUN_DIR/report/ (curves, confusion matrix for classifiers, report.md) and return its path.

    Bad input (no run there, no metrics yet, a config that no longer loads) is a UserError before anything is
    written. A checkpoint or data set that cannot be used for the confusion matrix leaves it out, with the
    reason in report.md and on stderr.
    """
    run = RunFiles.open(path, "report")
    log = run.metrics("report")
    cfg = _saved_config(run.path / CONFIG_FILE)
    given = run.path / REPORT_DIR
    target = given.resolve()  # a link: the folder it leads to, whose files are replaced (never the link)
    if target.exists() and not target.is_dir():
        raise UserError(f"{str(given)!r} is a file where the report goes; move it away, then run `trainer report`")
    if target.is_dir():
        foreign = foreign_entries(target, _written_by_report)
        if foreign:
            listed = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise UserError(
                f"{str(given)!r} holds files `trainer report` did not write ({listed}), which a new report would "
                "replace; move them out of it, then run `trainer report` again"
            )
    summary = run.summary()
    figures = curve_figures(log)
    confusion, no_confusion = _confusion(run, cfg, summary)

    def fill(folder: Path) -> None:
        for stem, figure in figures.items():
            save_png(figure, folder / f"{stem}.png")
        if confusion is not None:
            title = f"{confusion.split} split, {confusion.checkpoint.name}"
            save_png(confusion_figure(confusion.matrix, confusion.names, title), folder / f"{CONFUSION_STEM}.png")
            with open(folder / f"{CONFUSION_STEM}.csv", "w", newline="") as file:
                writer = csv.writer(file)
                writer.writerow(["true \\ predicted", *confusion.names])
                writer.writerows([name, *row] for name, row in zip(confusion.names, confusion.matrix, strict=True))
        text = _markdown(run, cfg, summary, log, list(figures), confusion, no_confusion)
        (folder / REPORT_FILE).write_text(text)

    replace_folder(target, fill)
    return given


def _saved_config(path: Path) -> RunConfig:
    """The run's saved config.yaml, validated; a UserError saying it is the run's copy that is damaged."""
    try:
        return load_config_file(path)
    except UserError as err:
        problem = str(err).removesuffix("; fix the recipe file").replace("; fix the recipe file", "")
        raise UserError(
            f"the run's saved {CONFIG_FILE} ({str(path)!r}) is damaged: {problem}; it is not a recipe to edit but the "
            "run's record: restore it from a copy of the run (or `trainer config RECIPE` with the run's overrides)"
        ) from None


def _written_by_report(path: Path) -> bool:
    """A file name `trainer report` writes: report.md, a curve or the confusion matrix (.png), its counts (.csv)."""
    return path.name in (REPORT_FILE, f"{CONFUSION_STEM}.csv") or path.suffix == ".png"


def _confusion(run: RunFiles, cfg: RunConfig, summary: dict[str, Any] | None) -> tuple[Confusion | None, str | None]:
    """The confusion matrix of the best checkpoint (else the newest), or None and why not."""
    if cfg.task not in CLASSIFIERS:
        return None, None
    checkpoint = run.best_checkpoint(summary) or newest_complete_checkpoint(run.path)
    if checkpoint is None:
        return None, "the run has no checkpoint yet"
    saved = saved_confusion(run.path, checkpoint)  # the fit's final test counted it: no evaluation here
    if saved is not None:
        return saved, None
    from trainer.report import confusion  # torch and the data stack: only here, after every input is checked

    try:
        return confusion.confusion_matrix(run.path, checkpoint), None
    except UserError as err:  # a corrupt checkpoint, a data path that has moved: the curves still stand
        print(f"trainer: report without a confusion matrix: {err}", file=sys.stderr, flush=True)
        return None, str(err)


# ----------------------------------------------------------------------------- report.md


def _markdown(
    run: RunFiles,
    cfg: RunConfig,
    summary: dict[str, Any] | None,
    log: MetricLog,
    stems: list[str],
    confusion: Confusion | None,
    no_confusion: str | None,
) -> str:
    state, current = run_state(run, summary)
    parts = [f"# {cfg.name or 'run'}: `{run.path}`\n", f"State: **{state}**.\n"]
    parts += ["## Final metrics\n", *_final_metrics(summary if current else None, log)]
    parts += ["## Run\n", _facts(run, cfg, summary if current else None, log)]
    tested = bool((summary or {}).get("test")) or any(key.startswith("test/") for key in log)
    ended = state == "finished"
    parts += ["## Config\n", table(["setting", "value"], _highlights(cfg, summary, tested, ended))]
    parts += ["## Curves\n", *(f"![{stem}]({stem}.png)\n" for stem in stems)]
    if confusion is not None:
        where = f"`{confusion.checkpoint.relative_to(run.path)}`"
        parts += [
            "## Confusion matrix\n",
            f"The {confusion.split} split ({confusion.examples:,} examples) with checkpoint {where}: accuracy "
            f"{number(confusion.accuracy)}. Rows: true class, columns: predicted ([counts]({CONFUSION_STEM}.csv)).\n",
            f"![confusion matrix]({CONFUSION_STEM}.png)\n",
        ]
    elif no_confusion is not None:
        parts += ["## Confusion matrix\n", f"Not made: {no_confusion}.\n"]
    return "\n".join(parts)


def _final_metrics(summary: dict[str, Any] | None, log: MetricLog) -> list[str]:
    if summary is not None:
        rows = [[key, number(value)] for stage in ("val", "test") for key, value in (summary.get(stage) or {}).items()]
        tested = "; test: the best checkpoint" if summary.get("test") else ""
        note = f"val: the final weights{tested} (summary.json)."
    else:
        keys = [key for key in log if key.startswith(("train/loss", "val/", "test/"))]
        rows = [[key, f"{number(log[key].last())} (step {log[key].steps[-1]})"] for key in keys]
        note = "No summary.json for this session (the run is still training or did not end): the last values logged."
    return [note + "\n", table(["metric", "value"], rows) if rows else "None logged.\n"]


def _facts(run: RunFiles, cfg: RunConfig, summary: dict[str, Any] | None, log: MetricLog) -> str:
    best = run.best_checkpoint(summary)
    monitor, mode = cfg.checkpoint.monitor, cfg.checkpoint.mode
    value = best_monitored(log, monitor, mode, best)
    lines = []
    if best is not None:
        lines.append(f"- best checkpoint: `{best.relative_to(run.path)}` ({monitor} = {number(value)}, {mode})")
    else:
        best_logged = f"; best {monitor} logged: {number(value)}" if value is not None else ""
        lines.append(f"- best checkpoint: not recorded (no summary.json){best_logged}")
    if summary is not None:
        epochs = summary.get("epochs")
        plural = "" if epochs == 1 else "s"
        lines.append(f"- steps: {number(summary.get('global_step'))} ({number(epochs)} epoch{plural})")
        parts = (("training", "train_seconds"), ("validation", "val_seconds"), ("checkpoints", "checkpoint_seconds"))
        timing = ", ".join(f"{what} {duration(summary[key])}" for what, key in parts if summary.get(key) is not None)
        lines.append(f"- wall time: {duration(summary.get('wall_seconds'))} (the last session; {timing})")
        speeds = [
            f"{number(summary[key])} {unit}"
            for key, unit in (("samples_per_second", "samples/s"), ("tokens_per_second", "tokens/s"))
            if summary.get(key) is not None
        ]
        if summary.get("mfu") is not None:
            speeds.append(f"MFU {summary['mfu']:.1%}")
        lines.append(f"- throughput: {', '.join(speeds) or '-'} (over the training steps alone)")
    else:
        last = log.last_step()
        lines.append(f"- steps logged: {number(last + 1 if last is not None else None)}")
    return "\n".join(lines) + "\n"


def _highlights(cfg: RunConfig, summary: dict[str, Any] | None, tested: bool, ended: bool) -> list[list[str]]:
    """The settings that say what the run was: task, model, data, batches, optimisation, precision, scale.
    `tested`: the run has test metrics; `ended`: it finished (so a test split it has none of was never there)."""
    settings = cfg.model.model_dump(exclude={"family"}).items()
    model = ", ".join(f"{key}={value}" for key, value in settings if value is not None)
    data = cfg.data
    if data.val_split:
        val = f"split {data.val_split!r} (data.val_split)"
    else:
        val = (
            f"the data set's 'validation' split, or a held-out {data.val_fraction:.0%} of train where it has none "
            "(data.val_split unset, data.val_fraction)"
        )
    if tested:
        test = f"split {data.test_split!r} (with the best checkpoint)"
    elif not data.test_split:
        test = "none (data.test_split unset)"
    elif ended:
        test = f"none (the data set has no {data.test_split!r} split)"
    else:
        test = f"split {data.test_split!r} when the run finishes (none yet)"
    data_rows = [["data", f"{data.path or data.name}: train: split {data.train_split!r}; val: {val}; test: {test}"]]
    limits = [f"{key}={getattr(data, key)}" for key in ("max_train_samples", "max_eval_samples") if getattr(data, key)]
    if limits:
        data_rows.append(["data limits", ", ".join(limits)])
    if data.tokenizer is not None:
        length = f"block_size={data.block_size}" if cfg.task == "language_modeling" else f"max_length={data.max_length}"
        tok = data.tokenizer
        vocab = "" if tok.kind == "char" else f", vocab_size={tok.vocab_size}"  # characters: the alphabet decides
        data_rows.append(["tokenizer", f"{tok.kind}{vocab}, lowercase={tok.lowercase}; {length}"])
    batch = summary or {}
    batches = (
        f"global {batch.get('global_batch_size', data.global_batch_size)}, "
        f"micro {batch.get('micro_batch_size', data.micro_batch_size or 'global / world size')}, "
        f"grad accumulation {batch.get('grad_accum_steps', '-')}, world size {batch.get('world_size', '-')}"
    )
    optim, scheduler, t, ckpt = cfg.optim, cfg.scheduler, cfg.trainer, cfg.checkpoint
    stops = ("max_steps", "max_epochs", "val_check_interval")
    return [
        ["task", cfg.task],
        ["model", f"{cfg.model.family}: {model}"],
        *data_rows,
        ["batch sizes", batches],
        ["optimizer", f"{optim.name}, lr={optim.lr:g}, weight_decay={optim.weight_decay:g}"],
        ["schedule", f"{scheduler.name}, warmup_steps={scheduler.warmup_steps}, min_lr_ratio={scheduler.min_lr_ratio}"],
        ["precision", t.precision],
        ["strategy", f"{t.strategy} (accelerator={t.accelerator}, devices={t.devices}, num_nodes={t.num_nodes})"],
        ["steps", ", ".join(f"{key}={getattr(t, key)}" for key in stops if getattr(t, key) is not None) or "-"],
        ["checkpoints", f"monitor={ckpt.monitor} ({ckpt.mode}), save_top_k={ckpt.save_top_k}"],
        ["seed", str(cfg.seed)],
    ]
