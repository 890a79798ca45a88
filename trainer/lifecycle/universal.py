"""DeepSpeed checkpoints across world sizes, through DeepSpeed's own universal checkpoint format.

A ZeRO checkpoint holds one optimizer shard per data-parallel rank and DeepSpeed refuses to load it on
a different number of ranks. On resume with another world size, the checkpoint is converted once with
DeepSpeed's `ds_to_universal` (next to the original, which stays untouched) and loaded with
`checkpoint.load_universal`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


def needs_conversion(checkpoint: Path, world_size: int) -> bool:
    return is_deepspeed_checkpoint(checkpoint) and saved_world_size(checkpoint) != world_size


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
        raise UserError(f"cannot convert {str(checkpoint)!r} for a new world size: {last}")
