"""Callbacks that make runs exact to resume and measurable."""

from __future__ import annotations

import os
import random
import shutil
import signal
import threading
import time
from pathlib import Path
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
            "numpy": {
                "kind": kind,
                "keys": torch.from_numpy(keys.astype(np.int64)),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "cached": float(cached),
            },
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


class LastCheckpoint(L.Callback):
    """The one writer of `checkpoints/last.ckpt`, the checkpoint a resume starts from.

    It writes every `every_n_train_steps` optimizer steps (if set), at the end of training, and when
    the run must stop: after `max_steps` steps, or when asked to. On SIGTERM, SIGINT or SIGUSR1 the
    handler only records the request, and at the next optimizer-step boundary the run saves and
    stops. Saving inside a signal handler could capture a half-updated model; waiting for the
    boundary costs at most one step.

    It also enforces `max_steps` (the recipe's `trainer.max_steps`) instead of Lightning: Lightning's
    own `max_steps` switches its loop to iteration-based restarts, which count one epoch too many when
    resuming from a checkpoint taken at an epoch boundary (the next epoch's shuffle is then skipped).
    Stopping here keeps Lightning's epoch-based restarts, which are exact.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)

    def __init__(self, path: Path, every_n_train_steps: int | None = None, max_steps: int = -1) -> None:
        self.path = path
        self.every_n_train_steps = every_n_train_steps
        self.max_steps = max_steps
        self.requested: int | None = None  # signal number
        self.stopped_at_step: int | None = None
        self._previous: dict[int, Any] = {}

    def _record(self, signum: int, frame: Any) -> None:
        self.requested = signum

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if 0 < self.max_steps <= trainer.global_step:  # a resumed run that has already arrived
            trainer.should_stop = True
        if threading.current_thread() is not threading.main_thread():
            return  # Python delivers signals to the main thread only
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._record)

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        batch_idx = args[-1]
        if (batch_idx + 1) % trainer.accumulate_grad_batches != 0:
            return  # not at an optimizer-step boundary
        if batch_idx + 1 >= trainer.num_training_batches:
            # The epoch's last batch: save in on_train_epoch_end instead, where Lightning's loop state
            # marks the epoch complete (taken here, a resume would count the epoch twice).
            return
        self._save_if_due(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save_if_due(trainer)

    def _save_if_due(self, trainer: L.Trainer) -> None:
        if self.stopped_at_step is not None:
            return
        if trainer.world_size > 1:
            # A signal may reach some ranks only; all must save together (ZeRO shards) and stop together.
            stop = trainer.strategy.reduce_boolean_decision(self.requested is not None, all=False)
            if stop and self.requested is None:
                self.requested = signal.SIGTERM
        if self.requested is not None or 0 < self.max_steps <= trainer.global_step:
            self._save(trainer)
            self.stopped_at_step = trainer.global_step
            trainer.should_stop = True
        elif self.every_n_train_steps and trainer.global_step % self.every_n_train_steps == 0:
            self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()
        if self.stopped_at_step is None:
            self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        """Write beside the old checkpoint, then swap: a crash mid-write leaves the old one whole, and a
        DeepSpeed directory never mixes shards of two saves (or of two world sizes)."""
        partial = self.path.with_name(self.path.name + ".partial")
        if trainer.is_global_zero:
            _remove(partial)
        trainer.strategy.barrier("last-checkpoint-clear")
        trainer.save_checkpoint(partial)  # every rank takes part: DeepSpeed writes one shard per rank
        trainer.strategy.barrier("last-checkpoint-written")
        if trainer.is_global_zero:
            swap_into_place(partial, self.path)
        trainer.strategy.barrier("last-checkpoint-swapped")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()

    @property
    def interrupted(self) -> bool:
        """Stopped by a signal (not by max_steps or max_epochs)."""
        return self.requested is not None and self.stopped_at_step is not None

    @property
    def signal_name(self) -> str | None:
        return signal.Signals(self.requested).name if self.requested is not None else None


def swap_into_place(new: Path, target: Path) -> None:
    """Replace `target` (a file or a DeepSpeed directory) with `new`; the old one goes last."""
    if new.is_file():
        os.replace(new, target)  # atomic for files
        return
    previous = target.with_name(target.name + ".previous")
    _remove(previous)
    if target.exists():
        target.rename(previous)
    new.rename(target)
    _remove(previous)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
