"""Where a run writes its checkpoints and where it stops.

`LastCheckpoint` is the one writer of `checkpoints/last.ckpt`, the checkpoint a resume starts from;
`BestCheckpoints` is Lightning's best-k writer with a checksum per file. Both write every checkpoint
beside the old one and seal it with a checksum record (trainer.lifecycle.checkpoints) before it counts.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint

from trainer.cluster.signals import StopRequest
from trainer.errors import WriteFailed
from trainer.lifecycle.checkpoints import (
    file_digest,
    record_directory,
    record_file,
    recorded_file_digests,
    remove_record,
)
from trainer.lifecycle.universal import CONSOLIDATED_SUFFIX

# A full disk, a quota, a file system that turned read-only or lost permissions: the run cannot go on
# writing, and says so in one line (not every OSError: anything else is a bug to see whole).
WRITE_FAILURES = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)


# On several ranks, agreeing on a stop request is a collective and a host sync: taken at every 10th optimizer
# step (and evaluation batch) rather than every one. A preempted job then stops at most 10 steps later.
AGREE_EVERY = 10


class RunStopped(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised inside Lightning's loop once a stop request has been honoured: it ends `fit`, `validate` or
    `test` at once, without the validation pass Lightning forces when `should_stop` is set."""


class LastCheckpoint(Checkpoint):
    """Writes `last.ckpt` and stops the run: on a StopRequest, at `max_steps`, every N steps and at the end.

    A stop request (SIGTERM, SIGINT, SIGUSR1) is honoured at the next optimizer-step boundary during
    training (save, then stop at once) and at the next batch of the evaluations that follow training.
    On several ranks the ranks agree first, at every AGREE_EVERY-th step or batch: a signal may reach some
    of them only, and all must save together (ZeRO shards) and stop together.

    It is a `Checkpoint`, so Lightning runs it after ModelCheckpoint (checkpoint callbacks go last):
    `last.ckpt` then records the best checkpoints including the validation just run; a save made before
    a validation at the same step is made again after it for the same reason.

    It also enforces `max_steps` (the recipe's `trainer.max_steps`) instead of Lightning: Lightning's
    own `max_steps` switches its loop to iteration-based restarts, which count one epoch too many when
    resuming from a checkpoint taken at an epoch boundary (the next epoch's shuffle is then skipped).
    Stopping here keeps Lightning's epoch-based restarts, which are exact (Lightning 2.4-2.6).
    """

    def __init__(
        self, path: Path, request: StopRequest, every_n_train_steps: int | None = None, max_steps: int = -1
    ) -> None:
        self.path = path
        self.request = request
        self.every_n_train_steps = every_n_train_steps
        self.max_steps = max_steps
        self.stopped_at_step: int | None = None
        self.saved_step: int | None = None
        self.write_seconds = 0.0  # reported beside training time, not inside it (see throughput.Throughput)
        self._stopping_on_request = False

    # ------------------------------------------------------------------ hooks

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.request.install()
        if 0 < self.max_steps <= trainer.global_step:  # a resumed run that has already arrived
            trainer.should_stop = True

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._stopping_on_request:
            raise RunStopped  # the validation Lightning forces after `should_stop`: the run has saved, go now
        self.request.honour_deferred_interrupt()
        self.request.install()

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.request.honour_deferred_interrupt()
        self.request.install()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        batch_idx = args[-1]
        if (batch_idx + 1) % trainer.accumulate_grad_batches != 0:
            return  # not at an optimizer-step boundary
        if batch_idx + 1 >= trainer.num_training_batches:
            # The epoch's last batch: save in on_train_epoch_end instead, where Lightning's loop state
            # marks the epoch complete (taken here, a resume would count the epoch twice).
            return
        self._at_step_boundary(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.stopped_at_step is None:
            self._at_step_boundary(trainer)
        if self._stopping_on_request:
            raise RunStopped

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        if self.saved_step == trainer.global_step:
            self._save(trainer)  # again, now that ModelCheckpoint has recorded this validation

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.saved_step != trainer.global_step:
            self._save(trainer)

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, *args: Any
    ) -> None:
        if trainer.state.fn != "fit":  # the final evaluation; one inside training finishes first
            self._stop_if_requested(trainer, batch_idx + 1)

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, *args: Any
    ) -> None:
        self._stop_if_requested(trainer, batch_idx + 1)

    # ------------------------------------------------------------------ decisions

    def _at_step_boundary(self, trainer: L.Trainer) -> None:
        """Stopping sets `should_stop`, so that Lightning still logs this step's metrics; the validation it
        then forces is cut short in on_validation_start."""
        if self._agreed_request(trainer, trainer.global_step):
            self._save(trainer)
            self.stopped_at_step = trainer.global_step
            self._stopping_on_request = True
            trainer.should_stop = True
            return
        if 0 < self.max_steps <= trainer.global_step:
            self._save(trainer)
            self.stopped_at_step = trainer.global_step
            trainer.should_stop = True
        elif self.every_n_train_steps and trainer.global_step % self.every_n_train_steps == 0:
            self._save(trainer)

    def _stop_if_requested(self, trainer: L.Trainer, count: int) -> None:
        if self._agreed_request(trainer, count):
            raise RunStopped

    def _agreed_request(self, trainer: L.Trainer, count: int) -> bool:
        """Whether any rank was asked to stop; every rank then knows the signal (the highest number).
        On several ranks they agree only when `count` (steps or batches) is a multiple of AGREE_EVERY."""
        signum = self.request.signum or 0
        if trainer.world_size > 1:
            if count % AGREE_EVERY:
                return False
            agreed = torch.tensor(signum, device=trainer.strategy.root_device)
            signum = int(trainer.strategy.reduce(agreed, reduce_op="max"))
        if signum and self.request.signum is None:
            self.request.signum = signum  # a peer's request
        return bool(signum)

    # ------------------------------------------------------------------ writing

    def _save(self, trainer: L.Trainer) -> None:
        """Write beside the old checkpoint, seal it with its checksum, then swap: a crash mid-write leaves the
        old one whole, and a DeepSpeed directory never mixes shards of two saves (or of two world sizes)."""
        with _timed(self):
            self._write_and_swap(trainer)
        self.saved_step = trainer.global_step

    def _write_and_swap(self, trainer: L.Trainer) -> None:
        partial = self.path.with_name(self.path.name + ".partial")
        if trainer.is_global_zero:
            remove_path(partial)
        trainer.strategy.barrier("last-checkpoint-clear")
        write_checkpoint(trainer, partial, keep=self.path)  # every rank takes part: DeepSpeed writes a shard each
        trainer.strategy.barrier("last-checkpoint-written")
        if trainer.is_global_zero:
            try:
                seal_and_swap(partial, self.path)
                # A consolidated copy of the FSDP2 checkpoint this one replaces (see lifecycle/universal.py).
                remove_path(self.path.with_name(self.path.name + CONSOLIDATED_SUFFIX))
            except OSError as err:
                if err.errno not in WRITE_FAILURES:
                    raise
                remove_path(partial)
                raise WriteFailed(_write_failure(self.path, err, self.path)) from None
        trainer.strategy.barrier("last-checkpoint-swapped")


class BestCheckpoints(ModelCheckpoint):
    """Lightning's best-k writer, with a checksum record beside every file it keeps and paths that survive
    a moved run directory (Lightning forgets its best-k record when the directory's path changes, and
    the files it no longer knows are then never deleted)."""

    write_seconds = 0.0  # reported beside training time, not inside it (see throughput.Throughput)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        with _timed(self):
            self._write_and_record(trainer, filepath)

    def _write_and_record(self, trainer: L.Trainer, filepath: str) -> None:
        path = Path(filepath)
        try:
            super()._save_checkpoint(trainer, filepath)
        except OSError as err:
            if err.errno not in WRITE_FAILURES:
                raise
            if trainer.is_global_zero:
                remove_path(path)
            raise WriteFailed(_write_failure(path, err, None)) from None
        if trainer.is_global_zero:
            if path.is_dir():
                record_directory(path)
            else:
                record_file(path, file_digest(path))

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._remove_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            remove_record(Path(filepath))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved_dir = state_dict.get("dirpath")
        if saved_dir and self.dirpath and saved_dir != self.dirpath:
            state_dict = _moved(state_dict, saved_dir, self.dirpath)
        super().load_state_dict(state_dict)


def _moved(state: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """The best-k record with its paths moved from the old directory into the new one (same file names)."""

    def move(path: Any) -> Any:
        if isinstance(path, str) and path and os.path.dirname(path) == old:
            return os.path.join(new, os.path.basename(path))
        return path

    moved = {key: move(value) for key, value in state.items()}
    moved["best_k_models"] = {move(path): score for path, score in state.get("best_k_models", {}).items()}
    moved["dirpath"] = new
    return moved


# ----------------------------------------------------------------------------- files


@contextlib.contextmanager
def _timed(writer: LastCheckpoint | BestCheckpoints) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        writer.write_seconds += time.perf_counter() - started


def write_checkpoint(trainer: L.Trainer, path: Path, keep: Path) -> None:
    """`trainer.save_checkpoint`, turning a full disk or a lost permission into one clear error."""
    try:
        trainer.save_checkpoint(path, weights_only=False)  # the full training state, said explicitly
    except OSError as err:
        if err.errno not in WRITE_FAILURES:
            raise
        remove_path(path)  # no `.partial` left behind
        raise WriteFailed(_write_failure(path, err, keep)) from None


def _write_failure(path: Path, err: OSError, keep: Path | None) -> str:
    kept = f"; the last good checkpoint {str(keep)!r} is intact" if keep is not None and keep.exists() else ""
    return f"cannot write checkpoint {str(path)!r}: {err.strerror}{kept}; free space or fix permissions, then resume"


def seal_and_swap(new: Path, target: Path) -> None:
    """Record `new`'s checksum and put it in place of `target` (a file or a DeepSpeed directory).

    A file is swapped by one atomic rename. Its record (`target.sha256`) cannot move in the same instant,
    so until the rename is done it names both the old and the new digest: whatever a crash interrupts,
    the file on disk matches its record. A directory carries its own record and is swapped by two
    renames; `newest_complete_checkpoint` finds the old one if a crash comes between them. So is a file that
    replaces a directory or a directory that replaces a file (a resume under another strategy).
    """
    if new.is_file() and not target.is_dir():
        digest = file_digest(new)
        record_file(target, digest, also=recorded_file_digests(target)[:1])
        os.replace(new, target)
        record_file(target, digest)
        return
    # A directory, or a file in place of a directory (a run whose strategy changed on resume): two renames.
    digest = file_digest(new) if new.is_file() else None
    if digest is None:
        record_directory(new)
    previous = target.with_name(target.name + ".previous")
    remove_path(previous)
    if target.exists():
        target.rename(previous)
    new.rename(target)
    beside = target.with_name(target.name + ".sha256")
    if digest is not None:
        record_file(target, digest)  # a file now: its record beside it
    else:
        beside.unlink(missing_ok=True)  # a directory carries its own; a file's, from before, goes
    remove_path(previous)


def remove_path(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
