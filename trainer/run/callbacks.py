"""Callbacks that make runs exact to resume and measurable."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch


class RNGState(L.Callback):
    """Saves every rank's global RNGs (torch, numpy, Python, CUDA) in each checkpoint and restores each
    rank's own on resume, so that dropout and any other sampling continue exactly where the stopped run
    left off, on every process.

    Lightning writes the checkpoint from rank 0 only, so the states are gathered to it first (saves are
    collective: every rank takes part). A resume on another world size keeps the states of the ranks
    that existed before; new ranks keep their seeded RNGs (that resume is exact only within tolerance).
    numpy's state is stored as a tensor so that the checkpoint still loads with `weights_only=True`.
    """

    KEY = "trainer_rng_states"  # a list, one entry per global rank

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Training draws from one stream per rank (seed + rank), as nanoGPT does: ranks see different
        dropout masks rather than the same ones. The weights were built before, from the common seed.
        Lightning calls this before it restores a checkpoint, whose saved streams then take over."""
        if stage == "fit":
            seed = self.seed + trainer.global_rank
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
            random.seed(seed)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        states: list[Any] = [None] * trainer.world_size
        if trainer.world_size > 1:
            torch.distributed.all_gather_object(states, _rng_state())
        else:
            states = [_rng_state()]
        checkpoint[self.KEY] = states

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        states = checkpoint.get(self.KEY) or []
        if trainer.global_rank < len(states):
            _set_rng_state(states[trainer.global_rank])


def _rng_state() -> dict[str, Any]:
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


def _set_rng_state(state: dict[str, Any]) -> None:
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
        self.peak_gpu_memory_bytes: int | None = None
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
        if torch.cuda.is_available():
            self.peak_gpu_memory_bytes = torch.cuda.max_memory_allocated()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.last_val_step = trainer.global_step

    @property
    def samples_per_second(self) -> float:
        return self.steps * self.global_batch_size / self.train_seconds if self.train_seconds else 0.0


class StopRequest:
    """SIGTERM, SIGINT and SIGUSR1 ask a run to stop. The handler only records which signal came;
    the training loop acts on it at the next step boundary (see LastCheckpoint)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)

    def __init__(self) -> None:
        self.signum: int | None = None

    def _record(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def install(self, signals: tuple[signal.Signals, ...] = SIGNALS) -> None:
        if threading.current_thread() is threading.main_thread():  # Python's rule for signal handlers
            for signum in signals:
                signal.signal(signum, self._record)

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Handlers in place for the whole of a fit: set-up, training, and the evaluations around it.

        SIGINT joins when training starts (LastCheckpoint): before then Ctrl-C interrupts at once, as
        there is nothing to save yet. SIGUSR1 and SIGTERM are recorded from the start, so a SLURM
        warning that comes during set-up still ends in a checkpoint and a requeue.
        """
        previous = {signum: signal.getsignal(signum) for signum in self.SIGNALS}
        self.install((signal.SIGTERM, signal.SIGUSR1))
        try:
            yield self
        finally:
            if threading.current_thread() is threading.main_thread():
                for signum, handler in previous.items():
                    signal.signal(signum, handler)


class LastCheckpoint(L.Callback):
    """The one writer of `checkpoints/last.ckpt`, the checkpoint a resume starts from.

    It writes every `every_n_train_steps` optimizer steps (if set), at the end of training, and when
    the run must stop: after `max_steps` steps, or when a StopRequest came (SIGTERM, SIGINT, SIGUSR1):
    then at the next optimizer-step boundary the run saves and stops. Saving inside a signal handler
    could capture a half-updated model; waiting for the boundary costs at most one step.

    Lightning installs a SIGTERM handler of its own at the start of every fit, validate and test; it
    kills the launcher's other ranks and broadcasts from inside the handler, which can hang a job.
    The first hooks after that (train, validation, test start) put the StopRequest's handler back.

    It also enforces `max_steps` (the recipe's `trainer.max_steps`) instead of Lightning: Lightning's
    own `max_steps` switches its loop to iteration-based restarts, which count one epoch too many when
    resuming from a checkpoint taken at an epoch boundary (the next epoch's shuffle is then skipped).
    Stopping here keeps Lightning's epoch-based restarts, which are exact.
    """

    def __init__(
        self, path: Path, request: StopRequest, every_n_train_steps: int | None = None, max_steps: int = -1
    ) -> None:
        self.path = path
        self.request = request
        self.every_n_train_steps = every_n_train_steps
        self.max_steps = max_steps
        self.stopped_at_step: int | None = None
        self._stopped_by_signal = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.request.install()
        if 0 < self.max_steps <= trainer.global_step:  # a resumed run that has already arrived
            trainer.should_stop = True

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.request.install()

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.request.install()

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
        requested = self.request.signum is not None
        if trainer.world_size > 1:
            # A signal may reach some ranks only; all must save together (ZeRO shards) and stop together.
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
            if requested and self.request.signum is None:
                self.request.signum = signal.SIGTERM  # a peer's request
        if requested or 0 < self.max_steps <= trainer.global_step:
            self._save(trainer)
            self.stopped_at_step = trainer.global_step
            self._stopped_by_signal = requested
            trainer.should_stop = True
        elif self.every_n_train_steps and trainer.global_step % self.every_n_train_steps == 0:
            self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
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

    @property
    def interrupted(self) -> bool:
        """Training stopped early on a StopRequest (not by max_steps or max_epochs)."""
        return self._stopped_by_signal

    @property
    def signal_name(self) -> str | None:
        return signal.Signals(self.request.signum).name if self.request.signum is not None else None


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


class BatchCounterRescale(L.Callback):
    """Resume on another world size: rescales Lightning's per-rank batch counters.

    Lightning counts the batches of an epoch per rank and places gradient-accumulation boundaries by
    that count. The same optimizer step is `grad_accum_steps` batches on a rank, and that number
    changes with the world size (the global batch does not). The checkpoint records the accumulation
    it was written with; on load the epoch's batch counters are moved to the same optimizer step in
    the new accumulation, before Lightning restores its loops.
    """

    KEY = "trainer_batch_layout"

    def __init__(self, world_size: int, grad_accum_steps: int) -> None:
        self.world_size = world_size
        self.grad_accum_steps = grad_accum_steps

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[self.KEY] = {"world_size": self.world_size, "grad_accum_steps": self.grad_accum_steps}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        saved = checkpoint.get(self.KEY)
        if saved is None or saved["grad_accum_steps"] == self.grad_accum_steps:
            return
        progress = checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]
        for scope in ("current", "total"):
            counters = progress[scope]
            ready = counters["ready"]
            # Whole optimizer steps done, re-expressed in this run's batches; a save taken inside a
            # step's last batch keeps its offset (completed = ready - 1) after the shift.
            rescaled = ready // saved["grad_accum_steps"] * self.grad_accum_steps
            for name in counters:
                counters[name] += rescaled - ready
