"""The hand-written PyTorch loop the benchmarks compare the framework with.

What a user would write without the framework: its data and model builders (so both sides train the same
model on the same tensors), then a bare loop with the same optimizer, schedule, clipping and precision.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from trainer.build import build_datamodule, build_task
from trainer.config.schema import RunConfig
from trainer.data.base import ResumableSampler
from trainer.distributed.batching import plan_batches
from trainer.lifecycle.initial_weights import load_initial_weights


@dataclass
class PlainLoop:
    cfg: RunConfig
    task: Any
    datamodule: Any
    device: torch.device
    optimizer: torch.optim.Optimizer
    scheduler: Any

    @classmethod
    def build(cls, cfg: RunConfig) -> PlainLoop:
        torch.manual_seed(cfg.seed)
        plan = plan_batches(cfg.data.global_batch_size, cfg.data.micro_batch_size, 1)
        datamodule = build_datamodule(cfg, plan)
        datamodule.load()
        task = build_task(cfg, datamodule.facts(), plan, len(datamodule.train_set))
        load_initial_weights(cfg, task.model)  # a pretrained model's weights, as from_pretrained would load them
        device = torch.device("cuda" if cfg.trainer.accelerator in ("gpu", "cuda") else "cpu")
        task.model.to(device)
        configured = task.configure_optimizers()
        if isinstance(configured, dict):
            optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
        else:
            optimizer, scheduler = configured, None
        return cls(cfg, task, datamodule, device, optimizer, scheduler)

    def batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """Training batches on the device, epoch after epoch (the last short batch too, as the framework).

        In the framework's order: its sampler, seeded the same and told each epoch, and a private generator
        (creating an iterator then draws nothing from the global RNG that dropout uses). Both sides then
        train on the same batches, and a comparison of time to accuracy compares the same trajectory, not
        two shuffles.
        """
        data = self.datamodule
        sampler = ResumableSampler(data.train_set, num_replicas=1, rank=0, shuffle=True, seed=self.cfg.seed)
        loader = DataLoader(data.train_set, batch_size=data.micro_batch_size, sampler=sampler,
                            generator=torch.Generator().manual_seed(self.cfg.seed), collate_fn=data.collate_fn,
                            pin_memory=self.device.type == "cuda")  # fmt: skip
        for epoch in itertools.count():
            sampler.set_epoch(epoch)
            for batch in loader:
                yield {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def step(self, batch: dict[str, torch.Tensor]) -> None:
        model = self.task.model
        model.train()
        with self._autocast():
            loss = self._loss(batch)
        loss.backward()
        if self.cfg.trainer.gradient_clip_val:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.cfg.trainer.gradient_clip_val)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()

    @torch.no_grad()
    def accuracy(self, dataset: Any) -> float:
        """A classifier's accuracy on `dataset` (every sample, in batches of 256)."""
        model = self.task.model
        model.eval()
        loader = DataLoader(dataset, batch_size=256, collate_fn=self.datamodule.collate_fn)
        right = total = 0
        for batch in loader:
            batch = {k: v.to(self.device) for k, v in batch.items()}
            with self._autocast():
                predicted = model(*self.task.model_inputs(batch)).argmax(-1)
            right += int((predicted == batch["labels"]).sum())
            total += batch["labels"].numel()
        return right / total

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _autocast(self) -> torch.autocast:
        enabled = self.cfg.trainer.precision == "bf16-mixed"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self.task.model(*self.task.model_inputs(batch))
        if self.task.task_name == "language_modeling":
            return F.cross_entropy(logits.flatten(0, 1), batch["input_ids"][:, 1:].flatten())
        return F.cross_entropy(logits, batch["labels"])
