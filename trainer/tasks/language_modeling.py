"""Causal language modelling: next-token cross-entropy and perplexity."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.text import Perplexity

from trainer.tasks.base import Task


class CausalLMTask(Task):
    task_name = "language_modeling"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.val_ppl, self.test_ppl = Perplexity(), Perplexity()
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()

    def model_inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        # Each block is block_size inputs followed by the token the last one predicts.
        return (batch["input_ids"][:, :-1],)

    def _loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.model(*self.model_inputs(batch))
        targets = batch["input_ids"][:, 1:]
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return loss, logits, targets

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _, _ = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        return loss  # checked for NaN by trainer.lifecycle.divergence

    def _evaluate(
        self, batch: dict[str, torch.Tensor], stage: str, perplexity: Perplexity, mean_loss: MeanMetric
    ) -> None:
        # Padding rows of a sharded evaluation set count in no metric (see EvalShard).
        _, logits, targets = self._loss(batch)
        real = batch["sample_mask"]
        logits, targets = logits[real].float(), targets[real]
        if targets.numel():
            perplexity.update(logits, targets)
            # Every block has the same length, so the mean of per-block means is the per-token mean.
            mean_loss.update(F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").mean(dim=1))
        self.log(f"{stage}/loss", mean_loss, prog_bar=True)
        self.log(f"{stage}/ppl", perplexity)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_ppl, self.val_loss)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_ppl, self.test_loss)
