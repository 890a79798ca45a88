"""Batch size means the same at every scale: the recipe fixes the global batch, the world size sets accumulation."""

from __future__ import annotations

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
