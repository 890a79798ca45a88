"""How fast a run trains: time in training steps apart from validation and checkpoint writes, samples and
tokens per second, FLOPs per sample, achieved FLOP/s and model-FLOPs utilisation (MFU).

No host sync is added per step: times are taken on the host, and throughput is logged only at Lightning's
logging steps, where logging the loss syncs anyway. On a GPU the host runs ahead of the device by at most
a few steps, which a window of `trainer.log_every_n_steps` steps averages out.

Approximations, said where they are reported: tokens and FLOPs per sample are those of the first batch's
sequence length (a language model's fixed block; a classifier's batch is padded to its longest text, and
the packed LSTM is counted at full length); a validation's data-loader start-up, which Lightning does
before `on_validation_start`, counts as training time.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from trainer.flops import peak_flops, training_flops
from trainer.models import model_from_hparams


class Throughput(L.Callback):
    """`train_seconds` is the wall time of this session's training loop less the validations inside it and
    the checkpoint writes (`val_seconds`, `checkpoint_seconds`), so throughput counts training steps only.
    It also keeps the step of the last validation, so `fit` knows whether its final val metrics are current.
    """

    def __init__(self, global_batch_size: int, precision: str) -> None:
        self.global_batch_size = global_batch_size
        self.precision = precision
        self.last_val_step: int | None = None
        self.peak_gpu_memory_bytes: int | None = None
        self.train_seconds = 0.0
        self.val_seconds = 0.0
        self.steps = 0
        self.flops_per_sample: int | None = None
        self.tokens_per_sample: int | None = None
        self.peak_flops: float | None = None  # per device
        self.world_size = 1
        self._start: float | None = None
        self._start_step = 0
        self._val_start: float | None = None
        self._logged: tuple[int, float] = (0, 0.0)  # steps and train_seconds at the last log

    # ------------------------------------------------------------------ hooks

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        self._start_step = trainer.global_step
        self.world_size = trainer.world_size
        self.peak_flops = peak_flops(trainer.strategy.root_device, self.precision)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, *args: Any) -> None:
        if self.flops_per_sample is None:  # once per session, from the shapes of the first batch
            counting = time.perf_counter()
            self._count(pl_module, batch)
            if self._start is not None:
                self._start += time.perf_counter() - counting  # the count is not training time

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        # Kept current at every step, so a run that a signal stops (no on_train_end) still reports it.
        if self._start is None:
            return
        elapsed = time.perf_counter() - self._start
        self.train_seconds = elapsed - self.val_seconds - checkpoint_seconds(trainer)
        self.steps = trainer.global_step - self._start_step
        # Lightning sends step metrics to the loggers when the global step is a multiple of this.
        at_logging_step = trainer.log_every_n_steps and trainer.global_step % trainer.log_every_n_steps == 0
        if at_logging_step and self.steps != self._logged[0]:
            self._log(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.on_train_batch_end(trainer, pl_module)
        if torch.cuda.is_available():
            self.peak_gpu_memory_bytes = torch.cuda.max_memory_allocated()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._start is not None and trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._val_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Checkpoint callbacks run after this one, so their writes after a validation are not counted here.
        if self._val_start is not None:
            self.val_seconds += time.perf_counter() - self._val_start
            self._val_start = None
        if not trainer.sanity_checking:
            self.last_val_step = trainer.global_step

    # ------------------------------------------------------------------ figures

    @property
    def samples_per_second(self) -> float:
        return self.steps * self.global_batch_size / self.train_seconds if self.train_seconds > 0 else 0.0

    def figures(self) -> dict[str, float | int | None]:
        """The summary's throughput keys over this session's training: null where unknown."""
        rate = self.samples_per_second
        return {
            "samples_per_second": round(rate, 2),
            "tokens_per_second": round(rate * self.tokens_per_sample, 1) if self.tokens_per_sample else None,
            "flops_per_sample": self.flops_per_sample or None,
            "mfu": self._mfu(rate),
        }

    def _mfu(self, samples_per_second: float) -> float | None:
        """Achieved over peak FLOP/s of all devices; `samples_per_second` is the global rate."""
        if self.peak_flops is None or not self.flops_per_sample:
            return None
        return round(samples_per_second * self.flops_per_sample / (self.peak_flops * self.world_size), 4)

    def _log(self, trainer: L.Trainer) -> None:
        steps, seconds = self.steps - self._logged[0], self.train_seconds - self._logged[1]
        self._logged = (self.steps, self.train_seconds)
        if seconds <= 0:
            return
        rate = steps * self.global_batch_size / seconds
        metrics = {"train/samples_per_second": rate}
        if self.tokens_per_sample:
            metrics["train/tokens_per_second"] = rate * self.tokens_per_sample
        if self.flops_per_sample:
            metrics["train/flops_per_second"] = rate * self.flops_per_sample
        mfu = self._mfu(rate)
        if mfu is not None:
            metrics["train/mfu"] = mfu
        # Host floats, written by rank 0 straight to the loggers: no collective, no device sync, and one row
        # per window (through `self.log`, Lightning would repeat the value at every logging step it sees).
        # The step is the one Lightning gives this step's own metrics (the count of steps before it).
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step - 1)

    def _count(self, pl_module: L.LightningModule, batch: dict[str, torch.Tensor]) -> None:
        inputs = tuple(x[:1] for x in pl_module.model_inputs(batch))
        hparams = pl_module.hparams
        try:
            self.flops_per_sample = training_flops(lambda: model_from_hparams(pl_module.task_name, hparams), inputs)
        except (RuntimeError, NotImplementedError, TypeError, ValueError) as err:
            # A measurement must never end a run: FLOPs and MFU are then reported as unknown.
            self.flops_per_sample = 0
            rank_zero_warn(f"FLOPs per sample could not be counted ({err}); the summary reports them as null")
        ids = inputs[0]
        self.tokens_per_sample = int(ids.shape[1]) if not ids.is_floating_point() else None


def checkpoint_seconds(trainer: L.Trainer) -> float:
    """Seconds this session's checkpoint writers spent writing (their `write_seconds`)."""
    return sum(getattr(callback, "write_seconds", 0.0) for callback in trainer.checkpoint_callbacks)
