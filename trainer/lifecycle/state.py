"""The state a checkpoint carries beyond Lightning's own, so that a resumed run continues exactly: every
rank's RNG streams, and the batch layout (world size, accumulation) the loop counters were counted in."""

from __future__ import annotations

import random
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


class LoggedStepOnResume(L.Callback):
    """A resumed run logs each step's metrics at that step, not at the one before.

    Lightning logs at its count of batches that stepped, which it adds to only after a batch's hooks and
    validation: a checkpoint our LastCheckpoint writes there records one step short, and Lightning's own
    correction on restart does not apply to it. The first resumed step then repeated the last logged one
    in metrics.csv (two values for one step and metric). At a session's first batch the count is set to
    the optimizer steps done, which it equals at every batch start of an uninterrupted run.
    """

    def __init__(self) -> None:
        self._aligned = False

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self._aligned:
            trainer.fit_loop.epoch_loop._batches_that_stepped = trainer.global_step
            self._aligned = True


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
