"""How `trainer report` and `trainer compare` write: a folder replaced whole, markdown tables, readable numbers."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path


def replace_folder(target: Path, fill: Callable[[Path], None]) -> None:
    """Fill a new folder beside `target`, then swap it in for the old one.

    Until the swap the old folder is untouched, so a failure (or Ctrl-C) while filling leaves it as it was,
    and the half-filled folder is removed. The two renames of the swap are not one atomic step; a crash
    between them leaves the old folder under its `.tmp` name (names ending `.tmp` belong to a run directory,
    see trainer.lifecycle.run_dir).
    """
    staging = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    previous = target.with_name(f"{target.name}.{os.getpid()}.old.tmp")
    for leftover in (staging, previous):
        shutil.rmtree(leftover, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        fill(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists():
        target.rename(previous)
    staging.rename(target)
    shutil.rmtree(previous, ignore_errors=True)


def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table (cells with `|` escaped)."""
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines) + "\n"


def number(value: float | int | None) -> str:
    """A metric as a person reads it: 4 significant digits, thousands for large values, '-' when unknown."""
    if value is None:
        return "-"
    if isinstance(value, int) or (abs(value) >= 1000 and float(value).is_integer()):
        return f"{int(value):,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def duration(seconds: float | None) -> str:
    """12.3 s, 4 min 05 s, 2 h 07 min."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
