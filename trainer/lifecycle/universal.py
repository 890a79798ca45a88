"""A run resumed under another strategy or world size: converted where a converter exists, else refused.

A ZeRO checkpoint holds one optimizer shard per data-parallel rank, laid out for its stage and offloads,
and DeepSpeed refuses to load it on a different number of ranks or under other offloads. On such a
resume the checkpoint is converted once with DeepSpeed's `ds_to_universal` (next to the original, which
stays untouched) and loaded with `checkpoint.load_universal`. That carries ZeRO-1 and -2 runs, with or
without offload, among themselves (measured with DeepSpeed 0.18 on CPU), and any stage across world sizes.

No converter carries the optimizer state between a plain Lightning checkpoint (one process, DDP) and a
DeepSpeed one, nor between ZeRO-3 and the other stages (DeepSpeed 0.18 finds no model states either way):
those resumes are refused before anything is written, naming the strategy the run was trained with.

FSDP2's checkpoints (torch.distributed.checkpoint folders) reshard as they load, onto any number of ranks and
either FSDP2 variant, and a plain checkpoint file loads into FSDP2 too (sharded as it is restored, see
FSDP2Strategy). An FSDP2 checkpoint resumed on one process or under DDP is consolidated once into a plain
checkpoint beside it (`consolidate_fsdp`), optimizer state included. Nothing carries FSDP2's optimizer state
into DeepSpeed, nor ZeRO's into FSDP2: refused, naming the commands that go on.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from trainer.distributed.deepspeed_config import ZeroSettings
from trainer.errors import UserError

LATEST, LATEST_UNIVERSAL = "latest", "latest_universal"
CONSOLIDATED_SUFFIX = ".plain"  # an FSDP2 checkpoint consolidated for a resume on one process or under DDP


def is_deepspeed_checkpoint(path: Path) -> bool:
    return path.is_dir() and (path / LATEST).is_file()


def saved_world_size(checkpoint: Path) -> int:
    """Data-parallel ranks that wrote the checkpoint: one optimizer shard each."""
    tag = (checkpoint / LATEST).read_text().strip()
    shards = list((checkpoint / tag).glob("*zero_pp_rank_*_mp_rank_00_optim_states.pt"))
    if not shards:
        raise UserError(f"checkpoint {str(checkpoint)!r} has no ZeRO optimizer shards; resume from another run")
    return len(shards)


def saved_zero(ds_config: dict[str, Any]) -> ZeroSettings:
    """The ZeRO settings a DeepSpeed checkpoint was written with (its ds_config, as the engine used it)."""
    section = ds_config.get("zero_optimization") or {}

    def offloaded(key: str) -> bool:
        return (section.get(key) or {}).get("device") in ("cpu", "nvme")

    return ZeroSettings(int(section.get("stage", 0)), offloaded("offload_optimizer"), offloaded("offload_param"))


def zero_strategy_name(zero: ZeroSettings | None, fsdp: bool = False) -> str:
    """The trainer.strategy that writes checkpoints like these ("auto" or "ddp" for a plain one)."""
    if fsdp:
        return "fsdp (or fsdp_shard_grad_op)"
    if zero is None:
        return "auto (one process) or ddp"
    offload = "_offload" if zero.offload_optimizer or zero.offload_parameters else ""
    return f"deepspeed_stage_{zero.stage}{offload}"


def needs_conversion(
    checkpoint: Path,
    saved: ZeroSettings | None,
    strategy: str,
    wanted: ZeroSettings | None,
    world_size: int,
    run_dir: Path,
    saved_fsdp: bool = False,
) -> bool:
    """Whether resuming `checkpoint` (written with `saved`, None for a plain one; `saved_fsdp`: FSDP2's) under
    `strategy` (whose ZeRO settings are `wanted`) on `world_size` ranks goes through the universal format; a
    UserError when no converter exists."""
    wanted_fsdp = strategy.startswith("fsdp")
    if saved_fsdp or wanted_fsdp:
        if saved_fsdp == wanted_fsdp or (wanted_fsdp and saved is None) or (saved_fsdp and wanted is None):
            return False  # DCP reshards on load; a plain file is sharded as it loads; consolidate_fsdp for DDP
        _refuse(checkpoint, saved, saved_fsdp, strategy, run_dir)
    convertible = (saved is None) == (wanted is None) and (saved is None or (saved.stage == 3) == (wanted.stage == 3))
    if not convertible:
        _refuse(checkpoint, saved, saved_fsdp, strategy, run_dir)
    if saved is None:
        return False  # a plain checkpoint loads on any number of processes
    return saved != wanted or saved_world_size(checkpoint) != world_size


def fsdp_to_plain(saved_fsdp: bool, strategy: str) -> bool:
    """Whether an FSDP2 checkpoint resumes under a plain strategy (one process, DDP): consolidated first."""
    return saved_fsdp and not strategy.startswith(("fsdp", "deepspeed"))


def consolidated_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name + CONSOLIDATED_SUFFIX)


def consolidate_fsdp(checkpoint: Path) -> Path:
    """An FSDP2 checkpoint as a plain Lightning checkpoint file beside it (`last.ckpt.plain`), made anew at every
    such resume (the checkpoint was verified; a copy kept from before might be of other bytes): every shard read
    in this process, the optimizer state keyed by position in its param groups' order, as a torch optimizer saves
    it (and as FSDP2 saved its names)."""
    import os

    import torch

    from trainer.lifecycle.checkpoints import fsdp_metadata, read_dcp

    target = consolidated_path(checkpoint)
    checkpoint_state = fsdp_metadata(checkpoint)
    shards = read_dcp(checkpoint)
    optimizers = []
    for index in range(len([key for key in shards if key.startswith("optimizer_")])):
        by_name = shards[f"optimizer_{index}"]
        order = [name for group in by_name["param_groups"] for name in group["params"]]
        position = {name: i for i, name in enumerate(order)}
        optimizers.append({
            "state": {position[name]: value for name, value in by_name["state"].items()},
            "param_groups": [{**g, "params": [position[n] for n in g["params"]]} for g in by_name["param_groups"]],
        })  # fmt: skip
    partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        torch.save({**checkpoint_state, "state_dict": shards["state_dict"], "optimizer_states": optimizers}, partial)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _refuse(checkpoint: Path, saved: ZeroSettings | None, saved_fsdp: bool, strategy: str, run_dir: Path) -> None:
    trained = zero_strategy_name(saved, saved_fsdp)
    resume_with = "fsdp on any number of processes (or auto or ddp)" if saved_fsdp else trained
    raise UserError(
        f"the run was trained with trainer.strategy={trained}, and its checkpoint {str(checkpoint)!r} cannot be "
        f"resumed under {strategy} (no converter carries its optimizer state across); resume with "
        f"trainer.strategy={resume_with}, or start a new run from its weights with "
        f"init_from={str(run_dir)!r}"
    )


def convert_to_universal(checkpoint: Path) -> None:
    """Write `<tag>_universal/` and `latest_universal` beside the checkpoint, unless already current."""
    tag = (checkpoint / LATEST).read_text().strip()
    universal = checkpoint / LATEST_UNIVERSAL
    if universal.is_file() and universal.stat().st_mtime >= (checkpoint / LATEST).stat().st_mtime:
        return
    command = [
        sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal",
        "--input_folder", str(checkpoint / tag),
        "--output_folder", str(checkpoint / f"{tag}_universal"),
        "--inject_missing_state",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"cannot convert {str(checkpoint)!r} for a new world size or ZeRO setting: {last}")
