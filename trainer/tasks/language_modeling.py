"""Causal language modelling: next-token cross-entropy and perplexity."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.text import Perplexity

from trainer.tasks.base import Task


class CausalLMTask(Task):
    task_name = "language_modeling"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.val_ppl = Perplexity()
        self.test_ppl = Perplexity()

    def _loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Each block is block_size inputs followed by the token the last one predicts.
        inputs, targets = batch["input_ids"][:, :-1], batch["input_ids"][:, 1:]
        logits = self.model(inputs)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return loss, logits, targets

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _, _ = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _evaluate(self, batch: dict[str, torch.Tensor], stage: str, perplexity: Perplexity) -> None:
        loss, logits, targets = self._loss(batch)
        perplexity.update(logits.float(), targets)
        batch_size = targets.shape[0]
        self.log(f"{stage}/loss", loss, prog_bar=True, sync_dist=True, batch_size=batch_size)
        self.log(f"{stage}/ppl", perplexity, batch_size=batch_size)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_ppl)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_ppl)
