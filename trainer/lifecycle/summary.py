"""What a run reports when it ends: `summary.json` (its throughput comes from lifecycle.throughput)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import lightning as L

from trainer.lifecycle.run_dir import SUMMARY_FILE


def metrics_with_prefix(trainer: L.Trainer, prefix: str) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith(prefix)}


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """Written whole or not at all: a reader never sees half a summary."""
    path = run_dir / SUMMARY_FILE
    partial = path.with_name(path.name + f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(partial, path)
