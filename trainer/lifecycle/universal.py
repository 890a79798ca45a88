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
either FSDP2 variant, and Lightning loads a plain checkpoint file into FSDP2 too (it shards the full state as
it restores it). Nothing carries an FSDP2 checkpoint's optimizer state into DeepSpeed or DDP, nor ZeRO's into
FSDP2: refused, naming the commands that go on (FSDP2 on any number of processes, or `init_from`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from trainer.distributed.deepspeed_config import ZeroSettings
from trainer.errors import UserError

LATEST, LATEST_UNIVERSAL = "latest", "latest_universal"


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
        if saved_fsdp == wanted_fsdp or (wanted_fsdp and saved is None):
            return False  # DCP reshards on load; a plain file is sharded as Lightning restores it
        _refuse(checkpoint, saved, saved_fsdp, strategy, run_dir)
    convertible = (saved is None) == (wanted is None) and (saved is None or (saved.stage == 3) == (wanted.stage == 3))
    if not convertible:
        _refuse(checkpoint, saved, saved_fsdp, strategy, run_dir)
    if saved is None:
        return False  # a plain checkpoint loads on any number of processes
    return saved != wanted or saved_world_size(checkpoint) != world_size


def _refuse(checkpoint: Path, saved: ZeroSettings | None, saved_fsdp: bool, strategy: str, run_dir: Path) -> None:
    trained = zero_strategy_name(saved, saved_fsdp)
    resume_with = "fsdp on any number of processes" if saved_fsdp else trained
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
