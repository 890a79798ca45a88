"""Batch size means the same at every scale: the recipe fixes the global batch, the world size sets accumulation."""

from __future__ import annotations

import math
from dataclasses import dataclass

from trainer.errors import UserError


@dataclass(frozen=True)
class BatchPlan:
    global_batch_size: int  # samples per optimizer step, all ranks together
    micro_batch_size: int  # samples per forward pass on one rank
    world_size: int
    grad_accum_steps: int


def plan_batches(global_batch_size: int, micro_batch_size: int | None, world_size: int) -> BatchPlan:
    per_rank, remainder = divmod(global_batch_size, world_size)
    if remainder or per_rank == 0:
        raise UserError(
            f"data.global_batch_size={global_batch_size} does not divide over {world_size} processes; "
            f"use a multiple of {world_size}"
        )
    micro = micro_batch_size or per_rank
    accum, remainder = divmod(per_rank, micro)
    if remainder or accum == 0:
        raise UserError(
            f"data.global_batch_size={global_batch_size} over {world_size} processes is {per_rank} per process, "
            f"which data.micro_batch_size={micro} does not divide; choose a micro batch that divides {per_rank}"
        )
    return BatchPlan(global_batch_size, micro, world_size, accum)


def _limited(batches: int, limit: int | float | None) -> int:
    """Lightning's `limit_*_batches`: an int caps the count, a float keeps that fraction (rounded down)."""
    if limit is None:
        return batches
    return min(batches, limit) if isinstance(limit, int) else int(batches * limit)


def train_batches_per_epoch(num_samples: int, plan: BatchPlan, limit: int | float | None = None) -> int:
    """Micro batches one rank trains on per epoch."""
    per_rank = num_samples // plan.world_size  # the train sampler drops what does not divide (drop_last)
    return _limited(math.ceil(per_rank / plan.micro_batch_size), limit)


def eval_batches(num_samples: int, plan: BatchPlan, limit: int | float | None = None) -> int:
    """Micro batches one rank evaluates (the evaluation set is padded to a multiple of the world size)."""
    per_rank = math.ceil(num_samples / plan.world_size)
    return _limited(math.ceil(per_rank / plan.micro_batch_size), limit)


def total_optimizer_steps(
    num_samples: int, plan: BatchPlan, max_epochs: int | None, max_steps: int, limit_train_batches: int | float | None
) -> int:
    """The optimizer steps a run will take, as Lightning counts them, for the learning-rate schedule.

    Computed here rather than with `trainer.estimated_stepping_batches`, which builds the train
    loader before a checkpoint is restored and so loses a resumed loader's position.
    """
    batches = train_batches_per_epoch(num_samples, plan, limit_train_batches)
    # Lightning steps the optimizer on the last batch of an epoch even with a partial accumulation.
    steps_per_epoch = math.ceil(batches / plan.grad_accum_steps)
    epochs_total = steps_per_epoch * max_epochs if max_epochs not in (None, -1) else None
    candidates = [n for n in (epochs_total, max_steps if max_steps > 0 else None) if n is not None]
    return max(1, min(candidates)) if candidates else 1
