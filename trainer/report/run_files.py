"""Reading a run directory as `trainer fit` left it: config.yaml, summary.json, metrics.csv, checkpoint names.

Pure Python (no torch, no matplotlib): `trainer runs` reads every run under a folder with this alone.
"""

from __future__ import annotations

import csv
import functools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trainer.errors import UserError
from trainer.files import refuse_special
from trainer.lifecycle.run_dir import CHECKPOINTS, CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, checkpoint_step

STEP = "step"
EXPORT_FILES = ("manifest.json", "model.json")  # what an export folder (trainer export) has and a run has not


@dataclass(frozen=True)
class Series:
    """One metric against the step it was logged at: steps increasing, one value per step."""

    steps: list[int]
    values: list[float]

    def last(self) -> float:
        return self.values[-1]

    def best(self, mode: str) -> float:
        return min(self.values) if mode == "min" else max(self.values)

    def before(self, step: int) -> float | None:
        """The value logged last before `step`. A checkpoint named step S was saved after the optimizer step
        that Lightning logs as S - 1, with the validation that ranked it."""
        earlier = [value for logged, value in zip(self.steps, self.values, strict=True) if logged < step]
        return earlier[-1] if earlier else None


@dataclass(frozen=True)
class MetricLog:
    """Every column of metrics.csv (but `step`) as a Series, keyed by metric name (`train/loss`, `val/acc`)."""

    series: dict[str, Series] = field(default_factory=dict)

    def __contains__(self, key: str) -> bool:
        return key in self.series

    def __getitem__(self, key: str) -> Series:
        return self.series[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.series)

    def keys(self) -> list[str]:
        return list(self.series)

    def last_step(self) -> int | None:
        steps = [series.steps[-1] for series in self.series.values()]
        return max(steps) if steps else None


def read_metrics(path: Path, only: set[str] | None = None) -> MetricLog:
    """metrics.csv as written by trainer.loggers.RunCSVLogger: a `step` column, a sparse column per metric,
    several rows per step.

    A resumed run appends to the file; the steps it logs again (those after the checkpoint it resumed from)
    replace the stopped run's, so that each metric has one value per step and its curve runs on without a
    gap or a fold. A row cut short (a run killed while writing it) is left out. `only`: read these columns alone.

    A file that cannot be read as CSV (a field past the csv module's limit, a header without a `step` column,
    an unreadable file) is a UserError naming it; undecodable bytes are read as U+FFFD (their rows are left out).
    """
    by_key: dict[str, dict[int, float]] = {}
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as file:
            reader = csv.DictReader(file)
            if reader.fieldnames is not None and STEP not in reader.fieldnames:
                raise UserError(
                    f"{str(path)!r} has no {STEP!r} column (its header is not one `trainer fit` writes); the run "
                    "directory is damaged: give `trainer` a run whose metrics.csv is intact"
                )
            for row in reader:
                step = _number(row.get(STEP))
                if step is None:
                    continue
                for key, text in row.items():
                    wanted = key not in (STEP, None) and (only is None or key in only)
                    value = _number(text) if wanted else None
                    if value is not None:
                        by_key.setdefault(key, {})[int(step)] = value  # later rows win
    except (csv.Error, OSError, OverflowError) as err:
        problem = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(
            f"{str(path)!r} is damaged and cannot be read as CSV ({problem}); restore it, or remove the damaged "
            "lines, then run the command again"
        ) from None
    return MetricLog(
        {key: Series(sorted(values), [values[step] for step in sorted(values)]) for key, values in by_key.items()}
    )


def _number(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_metrics(value: Any) -> bool:
    return isinstance(value, dict)


# summary.json's fields as trainer.api writes them, each with the check its value must pass: a value of another
# type (a hand-edited or damaged file) counts as absent. `val` and `test` keep their numeric entries alone.
_SUMMARY_FIELDS = {
    **dict.fromkeys(("global_step", "epochs", "world_size", "global_batch_size", "micro_batch_size"), _is_count),
    "grad_accum_steps": _is_count,
    **dict.fromkeys(
        (
            "train_seconds",
            "val_seconds",
            "checkpoint_seconds",
            "wall_seconds",
            "samples_per_second",
            "tokens_per_second",
            "flops_per_sample",
            "mfu",
            "peak_gpu_memory_bytes",
            "best_score",
        ),
        _is_number,
    ),  # fmt: skip
    **dict.fromkeys(("recipe", "run_dir", "best_checkpoint", "stopped_by"), lambda value: isinstance(value, str)),
    "requeued": lambda value: isinstance(value, bool),
    "val": _is_metrics,
    "test": _is_metrics,
}


def clean_summary(loaded: dict[str, Any]) -> dict[str, Any]:
    """summary.json's known fields whose values have the type `trainer fit` writes; the others are dropped."""
    summary = {key: loaded[key] for key, check in _SUMMARY_FIELDS.items() if key in loaded and check(loaded[key])}
    for stage in ("val", "test"):
        if stage in summary:
            summary[stage] = {str(k): v for k, v in summary[stage].items() if _is_number(v)}
    return summary


@dataclass(frozen=True)
class RunFiles:
    """A run directory written by `trainer fit`, checked to be one (see `open`)."""

    path: Path

    @classmethod
    def open(cls, path: str | Path, command: str) -> RunFiles:
        """The run at `path`, or a UserError naming the problem and the fix."""
        run_dir = Path(path).expanduser()
        for name in (CONFIG_FILE, SUMMARY_FILE, METRICS_FILE):
            refuse_special(run_dir / name, "run file")
        export = next((name for name in EXPORT_FILES if (run_dir / name).is_file()), None)
        if export is not None:
            raise UserError(
                f"{str(path)!r} is an export folder (it has {export}), not a run directory; give `trainer {command}` "
                "the run directory it was exported from (runs/<recipe>/<run>; `trainer runs` lists them)"
            )
        if not run_dir.exists():
            raise UserError(
                f"run directory {str(path)!r} does not exist; give `trainer {command}` a run directory written by "
                "`trainer fit` (runs/<recipe>/<run>; `trainer runs` lists them)"
            )
        if not run_dir.is_dir() or not (run_dir / CONFIG_FILE).is_file():
            raise UserError(
                f"{str(path)!r} is not a run directory (no {CONFIG_FILE}); give `trainer {command}` one written by "
                "`trainer fit` (runs/<recipe>/<run>; `trainer runs` lists them)"
            )
        return cls(run_dir)

    def config(self) -> dict[str, Any]:
        """The run's saved config.yaml, as written (complete: every section and key)."""
        return self._config

    @functools.cached_property
    def _config(self) -> dict[str, Any]:  # read once: `trainer runs` asks each run for its recipe and monitor
        refuse_special(self.path / CONFIG_FILE, "run file")
        try:
            text = (self.path / CONFIG_FILE).read_text(encoding="utf-8", errors="replace")
            loaded = yaml.load(text, Loader=_YAML_LOADER)
        except (yaml.YAMLError, OSError, RecursionError, ValueError):
            loaded = None
        if not isinstance(loaded, dict):
            raise UserError(f"{str(self.path / CONFIG_FILE)!r} is not a run's config; the run directory is damaged")
        return loaded

    def summary(self) -> dict[str, Any] | None:
        """summary.json, written when a run ends (finished or stopped); None before that or after a crash."""
        path = self.path / SUMMARY_FILE
        if not path.is_file():  # missing, or a FIFO or device, which a read would block on or never finish
            return None
        try:
            loaded = json.loads(path.read_text(encoding="utf-8", errors="replace"))
        except (OSError, ValueError, RecursionError):  # missing, unreadable, not JSON
            return None
        return clean_summary(loaded) if isinstance(loaded, dict) else None

    def metrics(self, command: str) -> MetricLog:
        """metrics.csv, or a UserError when the run has logged nothing yet."""
        path = self.path / METRICS_FILE
        log = read_metrics(path) if path.is_file() else MetricLog()  # a damaged file: a UserError naming it
        if not log.keys():
            raise UserError(
                f"run {str(self.path)!r} has no metrics yet (no rows in {METRICS_FILE}); run `trainer {command}` "
                "again once it has logged (every trainer.log_every_n_steps steps)"
            )
        return log

    def monitor(self) -> tuple[str, str]:
        """The metric that ranks the run's checkpoints, and whether lower (`min`) or higher (`max`) is better."""
        checkpoint = self.config().get("checkpoint")
        checkpoint = checkpoint if isinstance(checkpoint, dict) else {}  # a section of the wrong type: the defaults
        monitor, mode = checkpoint.get("monitor"), checkpoint.get("mode")
        monitor = monitor if isinstance(monitor, str) and monitor else "val/loss"
        return monitor, mode if mode in ("min", "max") else "min"

    def recipe(self) -> str | None:
        """The recipe's name as config.yaml records it, None when absent or not a name."""
        name = self.config().get("name")
        return name if isinstance(name, str) and name else None

    def best_checkpoint(self, summary: dict[str, Any] | None) -> Path | None:
        """The best checkpoint the summary names, found in this directory (the run may have moved since)."""
        named = (summary or {}).get("best_checkpoint")
        if not isinstance(named, str) or not Path(named).name:
            return None
        path = self.path / CHECKPOINTS / Path(named).name
        return path if path.is_file() or path.is_dir() else None  # a folder: DeepSpeed's or FSDP2's shards


def best_monitored(log: MetricLog, monitor: str, mode: str, best_checkpoint: Path | None) -> float | None:
    """The monitored metric of the best checkpoint (the validation that ranked it); without one, the best value
    logged. They differ when a final validation after training scored better: no checkpoint was saved then."""
    if monitor not in log:
        return None
    series = log[monitor]
    if best_checkpoint is not None and checkpoint_step(best_checkpoint) >= 0:
        value = series.before(checkpoint_step(best_checkpoint))
        if value is not None:
            return value
    return series.best(mode)


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's loader where installed: 10x faster
