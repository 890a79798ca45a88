"""What a run reports when it ends: `summary.json`, and the throughput it is measured from."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from trainer.lifecycle.run_dir import SUMMARY_FILE


class Throughput(L.Callback):
    """Wall time of training and samples per second over the optimizer steps of this session,
    and the step of the last validation (so `fit` knows whether its final val metrics are current)."""

    def __init__(self, global_batch_size: int) -> None:
        self.global_batch_size = global_batch_size
        self.last_val_step: int | None = None
        self.peak_gpu_memory_bytes: int | None = None
        self.train_seconds = 0.0
        self.steps = 0
        self._start: float | None = None
        self._start_step = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        self._start_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        # Kept current at every step, so a run that a signal stops (no on_train_end) still reports it.
        if self._start is not None:
            self.train_seconds = time.perf_counter() - self._start
            self.steps = trainer.global_step - self._start_step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.on_train_batch_end(trainer, pl_module)
        if torch.cuda.is_available():
            self.peak_gpu_memory_bytes = torch.cuda.max_memory_allocated()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.last_val_step = trainer.global_step

    @property
    def samples_per_second(self) -> float:
        return self.steps * self.global_batch_size / self.train_seconds if self.train_seconds else 0.0


def metrics_with_prefix(trainer: L.Trainer, prefix: str) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith(prefix)}


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """Written whole or not at all: a reader never sees half a summary."""
    path = run_dir / SUMMARY_FILE
    partial = path.with_name(path.name + f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(partial, path)
