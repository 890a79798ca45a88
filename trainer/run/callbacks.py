"""Callbacks that make runs exact to resume and measurable."""

from __future__ import annotations

import random
import time
from typing import Any

import lightning as L
import numpy as np
import torch


class RNGState(L.Callback):
    """Saves the global RNGs (torch, numpy, Python) in every checkpoint and restores them on resume,
    so that dropout and any other sampling continue exactly where the stopped run left off.

    Lightning restores callback state before the first resumed step. numpy's state is stored as a
    tensor so that the checkpoint still loads with `weights_only=True`.
    """

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)},
            "python": random.getstate(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class Throughput(L.Callback):
    """Wall time of training and samples per second over the optimizer steps of this session,
    and the step of the last validation (so `fit` knows whether its final val metrics are current)."""

    def __init__(self, global_batch_size: int) -> None:
        self.global_batch_size = global_batch_size
        self.last_val_step: int | None = None
        self.train_seconds = 0.0
        self.steps = 0
        self._start: float | None = None
        self._start_step = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        self._start_step = trainer.global_step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._start is not None:
            self.train_seconds = time.perf_counter() - self._start
            self.steps = trainer.global_step - self._start_step

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.last_val_step = trainer.global_step

    @property
    def samples_per_second(self) -> float:
        return self.steps * self.global_batch_size / self.train_seconds if self.train_seconds else 0.0
