"""`trainer runs`: one line per run under runs/, with its state worked out from the files alone.

No torch, no Lightning: this reads config.yaml, summary.json, metrics.csv, checkpoint names and the run's
lock, and answers in well under a second.

How a run's state shows on disk (trainer.api.fit, trainer.lifecycle):
- running: a process holds the run's lock (trainer.lifecycle.claim, an flock on the directory that rank 0
  holds from set-up to the end, dropped by the kernel when it dies). Checked first: a resumed or requeued
  run that is training again still has the summary.json of its previous session.
- finished: summary.json, written as a run ends, with `stopped_by` null.
- stopped at step N: summary.json with `stopped_by` set (SIGTERM, SIGINT, SIGUSR1): last.ckpt is at step N,
  `trainer fit RECIPE resume=RUN` continues it; ", requeued" when SLURM requeued the job, which then
  continues it by itself (the restarted job finds the run by its job id).
- failed: no summary.json and no live holder (an error, kill -9, out of memory, a node lost); or a
  summary.json of an earlier session while metrics.csv goes on past its step: a later session (a resume)
  trained and never ended. (Told by content, not by file times, which a copy of the run changes.)
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from trainer.errors import UserError
from trainer.lifecycle.claim import in_use
from trainer.lifecycle.run_dir import CONFIG_FILE, METRICS_FILE, RUNS_ROOT
from trainer.model_io import MANIFEST_FILE
from trainer.report.output import duration, number
from trainer.report.run_files import MetricLog, RunFiles, best_monitored, read_metrics

# A default run directory's name is the time it was created (trainer.lifecycle.run_dir.default_run_dir).
_STAMPED = re.compile(r"^(\d{8}-\d{6})(-\d+)?$")


@dataclass(frozen=True)
class RunLine:
    recipe: str
    path: Path
    state: str
    steps: int | None
    monitor: str
    best: float | None  # the monitored metric of the best checkpoint
    wall_seconds: float | None  # the latest session's (running: so far)
    started: float  # seconds since the epoch


def list_runs(root: Path | None = None, recipe: str | None = None) -> list[RunLine]:
    """The runs under `root` (default runs/), of `recipe` alone if given, oldest first. Runs live at
    <root>/<recipe>/<run> (the default run directory) or at <root>/<run> (`run_dir=runs/<name>`). A `root`
    given that does not exist is a UserError; the default one missing means no runs."""
    folder = root if root is not None else RUNS_ROOT
    if root is not None and not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise UserError(f"--root {str(root)!r} {what}; give the folder that holds <recipe>/<run> run directories")
    runs: list[Path] = [folder] if _is_a_run(folder) else []  # --root naming one run: that run
    for entry in _folders(folder) if not runs else []:
        runs += [entry] if _is_a_run(entry) else [path for path in _folders(entry) if _is_a_run(path)]
    lines = [_line(RunFiles(path)) for path in runs]
    if recipe is not None:
        lines = [line for line in lines if line.recipe == recipe or line.path.parent.name == recipe]
    return sorted(lines, key=lambda line: (line.started, str(line.path)))


def _line(run: RunFiles) -> RunLine:
    """describe(run); a run whose files cannot be read at all (permissions, say) is one line saying so."""
    try:
        return describe(run)
    except (OSError, ValueError, TypeError, AttributeError, KeyError, UserError) as err:
        why = f"{type(err).__name__}: {err.strerror}" if isinstance(err, OSError) else type(err).__name__
        state = f"damaged (unreadable: {why})"
        return RunLine(run.path.parent.name, run.path, state, None, "val/loss", None, None, _mtime(run.path))


def describe(run: RunFiles) -> RunLine:
    """The run's line; a damaged file leaves out what it would have told, never the line (nor the others)."""
    summary = run.summary()
    state, from_summary = run_state(run, summary)
    try:
        recipe = run.recipe() or run.path.parent.name
        monitor, mode = run.monitor()
    except UserError:  # a damaged config.yaml: the line still says what the other files say
        recipe, (monitor, mode) = run.path.parent.name, ("val/loss", "min")
    metrics = run.path / METRICS_FILE
    recorded = (summary or {}).get("best_score") if from_summary else None
    if recorded is not None:  # a finished run's summary holds it: its metrics.csv, however long, is not read
        best = recorded
    else:
        try:
            log = read_metrics(metrics, only={monitor}) if metrics.is_file() else MetricLog()
        except UserError:
            log, state = MetricLog(), f"{state}, damaged ({METRICS_FILE} unreadable)"
        best = best_monitored(log, monitor, mode, run.best_checkpoint(summary) if from_summary else None)
    if from_summary:
        assert summary is not None
        steps, wall = summary.get("global_step"), summary.get("wall_seconds")
    else:  # the steps it has logged (Lightning logs step S - 1 after S optimizer steps), the time it has run
        last = _last_logged_step(metrics)
        steps = last + 1 if last is not None else None
        session = _mtime(run.path / CONFIG_FILE)
        until = time.time() if state == "running" else _mtime(metrics) if metrics.is_file() else None
        wall = until - session if until is not None and until >= session else None
    return RunLine(recipe, run.path, state, steps, monitor, best, wall, _started(run))


def run_state(run: RunFiles, summary: dict | None) -> tuple[str, bool]:
    """The run's state (see the module's docstring), and whether summary.json describes its latest session."""
    if in_use(run.path):
        return "running", False
    if summary is None:
        return "failed", False
    last = _last_logged_step(run.path / METRICS_FILE)
    step = summary.get("global_step")  # an int (RunFiles.summary drops a value of another type) or None
    if last is not None and step is not None and last > step:  # test metrics are logged at the last step
        return "failed", False
    if summary.get("stopped_by"):
        stopped = f"stopped at step {step}" if step is not None else "stopped"
        return (f"{stopped}, requeued" if summary.get("requeued") else stopped), True
    return "finished", True


def render(lines: list[RunLine], root: Path | None, recipe: str | None) -> str:
    """The table `trainer runs` prints: a header, then one line per run."""
    where = str(root if root is not None else RUNS_ROOT)
    if not lines:
        of = f" of recipe {recipe!r}" if recipe else ""
        return f"no runs{of} under {where}/ (a run directory is {where}/<recipe>/<run>, written by `trainer fit`)\n"
    header = ["recipe", "run", "state", "steps", "best", "wall time"]
    rows = [
        [
            line.recipe,
            str(line.path),
            line.state,
            number(line.steps),
            f"{line.monitor}={number(line.best)}" if line.best is not None else "-",
            duration(line.wall_seconds),
        ]
        for line in lines
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n"
                   for row in [header, *rows])  # fmt: skip


def _is_a_run(path: Path) -> bool:
    """A run directory has a config.yaml; so has an export folder (its manifest says so), which is no run."""
    return (path / CONFIG_FILE).is_file() and not (path / MANIFEST_FILE).is_file()


def _folders(folder: Path) -> list[Path]:
    try:
        return sorted(entry for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    except OSError:  # not a folder, or one that cannot be listed
        return []


def _started(run: RunFiles) -> float:
    """When the run started: the time in a default run directory's name, else when its config.yaml was
    written (by its latest session: a resumed run with a name of its own sorts by its resume)."""
    stamped = _STAMPED.match(run.path.name)
    if stamped:
        try:
            return time.mktime(time.strptime(stamped.group(1), "%Y%m%d-%H%M%S"))
        except (ValueError, OverflowError):  # a name like a time that is none (20241399-999999)
            pass
    return _mtime(run.path / CONFIG_FILE)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _last_logged_step(metrics: Path) -> int | None:
    """The step of metrics.csv's last whole row, read from the file's end (a long run's file is large)."""
    if not metrics.is_file():
        return None
    try:
        with open(metrics, "rb") as file:
            start = max(0, file.seek(0, 2) - 4096)
            file.seek(start)
            tail = file.read().decode(errors="replace")
    except OSError:
        return None
    lines = tail.split("\n")[1 if start else 0 : -1]  # whole lines: not one cut by the seek, nor one half-written
    firsts = (line.split(",", 1)[0] for line in lines)
    steps = [int(first) for first in firsts if first.isascii() and first.isdigit()]
    return steps[-1] if steps else None
