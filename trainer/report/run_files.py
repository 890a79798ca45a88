"""Reading a run directory as `trainer fit` left it: config.yaml, summary.json, metrics.csv, checkpoint names.

Pure Python (no torch, no matplotlib): `trainer runs` reads every run under a folder with this alone.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trainer.errors import UserError
from trainer.lifecycle.run_dir import CHECKPOINTS, CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, checkpoint_step

STEP = "step"


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
    """
    by_key: dict[str, dict[int, float]] = {}
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            step = _number(row.get(STEP))
            if step is None:
                continue
            for key, text in row.items():
                wanted = key not in (STEP, None) and (only is None or key in only)
                value = _number(text) if wanted else None
                if value is not None:
                    by_key.setdefault(key, {})[int(step)] = value  # later rows win
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


@dataclass(frozen=True)
class RunFiles:
    """A run directory written by `trainer fit`, checked to be one (see `open`)."""

    path: Path

    @classmethod
    def open(cls, path: str | Path, command: str) -> RunFiles:
        """The run at `path`, or a UserError naming the problem and the fix."""
        run_dir = Path(path).expanduser()
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
        try:
            loaded = yaml.load((self.path / CONFIG_FILE).read_text(), Loader=_YAML_LOADER)
        except yaml.YAMLError:
            loaded = None
        if not isinstance(loaded, dict):
            raise UserError(f"{str(self.path / CONFIG_FILE)!r} is not a run's config; the run directory is damaged")
        return loaded

    def summary(self) -> dict[str, Any] | None:
        """summary.json, written when a run ends (finished or stopped); None before that or after a crash."""
        try:
            loaded = json.loads((self.path / SUMMARY_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return loaded if isinstance(loaded, dict) else None

    def metrics(self, command: str) -> MetricLog:
        """metrics.csv, or a UserError when the run has logged nothing yet."""
        path = self.path / METRICS_FILE
        log = read_metrics(path) if path.is_file() else MetricLog()
        if not log.keys():
            raise UserError(
                f"run {str(self.path)!r} has no metrics yet (no rows in {METRICS_FILE}); run `trainer {command}` "
                "again once it has logged (every trainer.log_every_n_steps steps)"
            )
        return log

    def monitor(self) -> tuple[str, str]:
        """The metric that ranks the run's checkpoints, and whether lower (`min`) or higher (`max`) is better."""
        checkpoint = self.config().get("checkpoint") or {}
        return str(checkpoint.get("monitor", "val/loss")), str(checkpoint.get("mode", "min"))

    def best_checkpoint(self, summary: dict[str, Any] | None) -> Path | None:
        """The best checkpoint the summary names, found in this directory (the run may have moved since)."""
        named = (summary or {}).get("best_checkpoint")
        if not named:
            return None
        path = self.path / CHECKPOINTS / Path(named).name
        return path if path.exists() else None


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
