"""Small helpers the tests share (fixtures live in conftest.py). Importing this module imports neither
torch nor Lightning, so that the unit tier (tests/unit/) may use it; callbacks.py holds what needs them."""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def fit(recipe: str, *overrides: str) -> dict[str, Any]:
    """`trainer fit RECIPE OVERRIDES...` in process, through the same path as the CLI."""
    from trainer import api

    return api.fit(api.resolve_fit_config(recipe, list(overrides)))


def metric_series(run_dir: Path, key: str) -> list[float]:
    with open(Path(run_dir) / "metrics.csv") as f:
        return [float(row[key]) for row in csv.DictReader(f) if row.get(key)]


def logged_steps(run_dir: Path) -> list[tuple[int, str, float]]:
    """(step, metric, value) for every value metrics.csv holds, in order."""
    with open(Path(run_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return [
        (int(row["step"]), key, float(value)) for row in rows for key, value in row.items() if key != "step" and value
    ]


def logged_losses(run_dir: Path) -> list[float]:
    """The training losses a run has logged so far; none before its metrics.csv exists."""
    try:
        return metric_series(run_dir, "train/loss")
    except FileNotFoundError:
        return []


def one_error_line(result, status: int = 2) -> str:
    """The single line a failed command prints on stderr (no traceback, nothing else), checked."""
    assert result.returncode == status, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every path under `folder` with its content hash and modification time: equal snapshots, nothing changed."""
    state = {}
    for path in sorted(folder.rglob("*")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        state[str(path.relative_to(folder))] = (digest, path.stat().st_mtime_ns)
    return state


def start_or_skip(start: Callable[[], None], unavailable: type[Exception], required_by: str, what: str) -> None:
    """Start what a test tier runs on (a SLURM cluster, namespaced nodes). Where it cannot be made the tier
    skips with the reason, unless the variable `required_by` is set (.ci/run sets it): there that fails."""
    try:
        start()
    except unavailable as err:
        if os.environ.get(required_by):
            pytest.fail(f"{what} could not be started: {err}")
        pytest.skip(f"no {what} here: {err}")


FAST = ("trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1")


POSITIVE_WORDS = ["good", "great", "fine", "lovely", "superb", "moving"]
NEGATIVE_WORDS = ["bad", "awful", "poor", "dull", "boring", "weak"]
NEUTRAL_WORDS = ["the", "film", "movie", "was", "and", "plot", "acting", "it"]


def sentiment_csvs(folder: Path, train: int = 400, test: int = 100, seed: int = 0) -> Path:
    """train.csv and test.csv of short reviews labelled `positive` or `negative` (text labels, as users have
    them): a word from the label's pool among neutral words, learnable in a few dozen steps."""
    import random

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", train), ("test", test)):
        with open(folder / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["review", "sentiment"])
            for _ in range(rows):
                label = rng.choice(["positive", "negative"])
                words = rng.sample(NEUTRAL_WORDS, 4)
                words.insert(rng.randrange(5), rng.choice(POSITIVE_WORDS if label == "positive" else NEGATIVE_WORDS))
                writer.writerow([" ".join(words), label])
    return folder


# A module whose import is interrupted, inside a library that swallows what the interruption raises.
SELF_INTERRUPTING_MODULE = """
import os, signal
try:
    os.kill(os.getpid(), signal.SIGINT)
    sum(range(1000))  # the handler runs here, between bytecodes, inside the import
except BaseException:
    INTERRUPTION_SWALLOWED = True
IMPORT_FINISHED = True
"""
