"""Optimizer and learning-rate schedule from the recipe, built from torch's own pieces."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

# Builds the optimizer from its parameter groups and the recipe's `optim` section. A strategy that needs
# its own optimizer (ZeRO-Offload's CPU Adam) passes one in; tasks know nothing of strategies.
OptimizerFactory = Callable[[list[dict[str, Any]], dict[str, Any]], torch.optim.Optimizer]


def build_optimizer(
    model: nn.Module, optim: dict[str, Any], factory: OptimizerFactory | None = None
) -> torch.optim.Optimizer:
    """AdamW or SGD; weight decay only on matrices (not on biases, norms), as in GPT-2 and nanoGPT."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": optim["weight_decay"]},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    if factory is not None:
        return factory(groups, optim)
    fused = bool(optim.get("fused"))  # absent in checkpoints from before the setting: torch's default then
    if optim["name"] == "sgd":
        return torch.optim.SGD(
            groups, lr=optim["lr"], momentum=optim["momentum"], nesterov=optim["nesterov"], fused=fused or None
        )
    return torch.optim.AdamW(groups, lr=optim["lr"], betas=tuple(optim["betas"]), fused=fused or None)


def keep_kernel_choice(optimizer: torch.optim.Optimizer) -> None:
    """Give a torch optimizer whose state was loaded from a checkpoint the kernel it was built with.

    `load_state_dict` takes each param group's `fused` and `foreach` from the checkpoint, so a run saved
    with another choice would step with the old kernel, or fail (torch refuses `found_inf`, which the
    divergence guard hands fused optimizers, on an unfused step). The step counters move with the choice:
    fused kernels keep them on the parameter's device as float32, the others on the CPU.
    """
    if not isinstance(optimizer, torch.optim.AdamW | torch.optim.SGD):
        return  # DeepSpeed's, and any a strategy brings
    fused = optimizer.defaults.get("fused")
    for group in optimizer.param_groups:
        group["fused"], group["foreach"] = fused, optimizer.defaults.get("foreach")
        for param in group["params"]:
            step = optimizer.state.get(param, {}).get("step")
            if isinstance(step, torch.Tensor):
                device = param.device if fused else torch.device("cpu")
                optimizer.state[param]["step"] = step.to(device=device, dtype=torch.float32)


class Schedule:
    """The learning rate at each optimizer step, as a multiple of `optim.lr`: linear warmup, then cosine or
    linear decay to `min_lr_ratio` at `total_steps`, then held there.

    A callable object rather than a function: torch's LambdaLR saves its attributes in every checkpoint
    and restores them on resume. That is what makes extending a run continuous: when a resumed run has
    another total (say `trainer.max_steps` went up), `extend_to` decays from the rate the run has reached
    down to the floor over the steps that remain, instead of jumping back up the old curve. A run that
    had already decayed to the floor stays there.
    """

    def __init__(self, kind: str, warmup_steps: int, total_steps: int, floor: float) -> None:
        self.kind = kind
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.floor = floor
        self.rebase_step: int | None = None  # where an extended run started its new decay
        self.rebase_value = 1.0  # the multiplier it had there

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        start, top = self.warmup_steps, 1.0
        if self.rebase_step is not None and step >= self.rebase_step:
            start, top = self.rebase_step, self.rebase_value
        progress = min(1.0, (step - start) / max(1, self.total_steps - start))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if self.kind == "cosine" else 1 - progress
        return self.floor + (top - self.floor) * shape

    def extend_to(self, total_steps: int, step: int) -> None:
        """Continue from `step` (where a resumed run is) towards a new total."""
        if total_steps == self.total_steps:
            return
        if step >= self.warmup_steps:
            self.rebase_value, self.rebase_step = self(step), step
        self.total_steps = total_steps


def build_scheduler(optimizer: torch.optim.Optimizer, scheduler: dict[str, Any], total_steps: int) -> LambdaLR | None:
    """Linear warmup, then cosine or linear decay to `min_lr_ratio * lr`, stepped once per optimizer step."""
    if scheduler["name"] == "none":
        return None
    schedule = Schedule(scheduler["name"], scheduler["warmup_steps"], total_steps, scheduler["min_lr_ratio"])
    return LambdaLR(optimizer, schedule)
