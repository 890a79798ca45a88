"""Optimizer and learning-rate schedule from the recipe, built from torch's own pieces."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR


def build_optimizer(model: nn.Module, optim: dict[str, Any]) -> torch.optim.Optimizer:
    """AdamW or SGD; weight decay only on matrices (not on biases, norms), as in GPT-2 and nanoGPT.

    With `optim["cpu_offload"]` (ZeRO-Offload), the optimizer step runs on the CPU in DeepSpeed's
    vectorised `DeepSpeedCPUAdam`, which DeepSpeed requires there (it compiles on first use).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": optim["weight_decay"]},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    if optim.get("cpu_offload"):
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, lr=optim["lr"], betas=tuple(optim["betas"]), adamw_mode=True)
    if optim["name"] == "sgd":
        return torch.optim.SGD(groups, lr=optim["lr"], momentum=optim["momentum"], nesterov=optim["nesterov"])
    return torch.optim.AdamW(groups, lr=optim["lr"], betas=tuple(optim["betas"]))


def build_scheduler(
    optimizer: torch.optim.Optimizer, scheduler: dict[str, Any], total_steps: int
) -> LRScheduler | None:
    """Linear warmup, then cosine or linear decay to `min_lr_ratio * lr`, stepped once per optimizer step."""
    name, warmup = scheduler["name"], scheduler["warmup_steps"]
    if name == "none":
        return None
    decay_steps = max(1, total_steps - warmup)
    floor = scheduler["min_lr_ratio"]
    if name == "cosine":
        base_lr = optimizer.param_groups[0]["lr"]
        decay: LRScheduler = CosineAnnealingLR(optimizer, T_max=decay_steps, eta_min=base_lr * floor)
    else:
        decay = LinearLR(optimizer, start_factor=1.0, end_factor=max(floor, 1e-8), total_iters=decay_steps)
    if warmup == 0:
        return decay
    ramp = LinearLR(optimizer, start_factor=1.0 / warmup, end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, [ramp, decay], milestones=[warmup])
