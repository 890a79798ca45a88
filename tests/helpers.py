"""Small helpers the tests share (fixtures live in conftest.py)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from trainer import api


def fit(recipe: str, *overrides: str) -> dict[str, Any]:
    """`trainer fit RECIPE OVERRIDES...` in process, through the same path as the CLI."""
    return api.fit(api.resolve_fit_config(recipe, list(overrides)))


def metric_series(run_dir: Path, key: str) -> list[float]:
    with open(Path(run_dir) / "metrics.csv") as f:
        return [float(row[key]) for row in csv.DictReader(f) if row.get(key)]


FAST = ("trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1")
