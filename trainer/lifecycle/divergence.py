"""A NaN or infinite loss never reaches the weights or a checkpoint, and stops the run naming its step.

Two ways to keep that promise, chosen per run:

- **On the device** (a fused torch optimizer, no DeepSpeed, no fp16 loss scaler): each step's verdict
  (loss and gradient norm finite) is computed on the device and handed to the fused optimizer as its
  `found_inf`, the hook torch's GradScaler uses, so a bad step is skipped by the optimizer kernel itself
  with no host sync. The host reads the verdicts two steps late, when they are long computed, so the CPU
  keeps queueing work ahead of the GPU; it reads the newest one before every checkpoint, validation and
  the end of training. After a data-parallel all-reduce every rank holds the same gradients, so ranks
  reach the same verdict at the same step without a collective of their own.
- **On the host** (DeepSpeed, whose engine steps its own optimizer on sharded gradients; fp16, whose
  GradScaler owns `found_inf`; an unfused optimizer): the loss is checked before backward, one sync per
  step, and on several ranks the decision is shared so that no rank waits for a peer that has stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DeepSpeedStrategy

from trainer.errors import TrainingDiverged

ADVICE = "lower optim.lr, set trainer.gradient_clip_val, or check the data"
LAG = 2  # optimizer steps between a verdict and the host reading it


@dataclass
class _Copy:
    """A verdict on its way to the host: a (pinned) host tensor and the event that says it has arrived."""

    host: torch.Tensor
    arrived: torch.cuda.Event | None  # None on a CPU, where the copy is done when it returns


class DivergenceGuard(Callback):
    def __init__(self) -> None:
        self.on_device = False
        self._optimizer: torch.optim.Optimizer | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        optimizer = trainer.optimizers[0] if len(trainer.optimizers) == 1 else None
        self.on_device = (
            optimizer is not None
            and not isinstance(trainer.strategy, DeepSpeedStrategy)  # whose ZeRO optimizer has no `defaults`
            and bool(getattr(optimizer, "defaults", {}).get("fused"))
            and getattr(trainer.precision_plugin, "scaler", None) is None
        )
        if not self.on_device:
            return
        device = trainer.strategy.root_device
        self._optimizer = optimizer
        self._skip = torch.zeros((), device=device)  # the fused kernels' found_inf: nonzero skips the step
        optimizer.found_inf = self._skip  # read by torch's fused Adam/AdamW/SGD at every step
        self._loss_bad = torch.zeros((), dtype=torch.bool, device=device)
        self._step = torch.tensor(trainer.global_step, device=device)  # counted on the device, never read
        self._first_bad = torch.full((), -1, device=device)  # the first bad step, -1 while there is none
        cuda = device.type == "cuda"
        self._copies = [
            _Copy(torch.full((), -1, pin_memory=cuda), torch.cuda.Event() if cuda else None) for _ in range(LAG)
        ]
        self._steps_seen = 0

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        if self.on_device:
            self._loss_bad.logical_or_(~torch.isfinite(loss.detach()))
            return
        finite = bool(torch.isfinite(loss.detach()))
        if trainer.world_size > 1:
            finite = not trainer.strategy.reduce_boolean_decision(not finite, all=False)
        if not finite:
            raise TrainingDiverged(f"loss is not finite at step {trainer.global_step + 1}: {ADVICE}")

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if not self.on_device:
            return
        slot = self._copies[self._steps_seen % LAG]
        self._raise_if_seen(slot)  # the verdict of LAG steps ago, before its slot takes this one's
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        bad = self._loss_bad | ~torch.isfinite(torch.nn.utils.get_total_norm(grads))
        self._skip.copy_(bad)
        self._loss_bad.zero_()
        self._step += 1
        self._first_bad.copy_(torch.where(bad & (self._first_bad < 0), self._step, self._first_bad))
        slot.host.copy_(self._first_bad, non_blocking=True)
        if slot.arrived is not None:
            slot.arrived.record()
        self._steps_seen += 1

    # Before anything keeps or uses the weights: the newest verdict, waited for.
    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._check_newest()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_newest()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_newest()
        if self._optimizer is not None:
            del self._optimizer.found_inf  # a later evaluation or a user's own step must not see it

    def _check_newest(self) -> None:
        if self.on_device and self._steps_seen:
            self._raise_if_seen(self._copies[(self._steps_seen - 1) % LAG])

    @staticmethod
    def _raise_if_seen(copy: _Copy) -> None:
        if copy.arrived is not None:
            copy.arrived.synchronize()
        first_bad = int(copy.host)
        if first_bad >= 0:
            raise TrainingDiverged(
                f"loss or gradients are not finite at step {first_bad} (that update was skipped): {ADVICE}"
            )
