"""How `trainer report` and `trainer compare` write: a folder replaced whole, markdown tables, readable numbers."""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path


def foreign_entries(folder: Path, ours: Callable[[Path], bool]) -> list[str]:
    """The names in `folder` that are not plain files `ours` accepts (nor our own staging leftovers): what
    replacing the folder would destroy. An entry that is a folder or a link is never ours."""
    return sorted(
        entry.name
        for entry in folder.iterdir()
        if not (_STAGING.match(entry.name) and entry.is_dir() and not entry.is_symlink())
        and not (entry.is_file() and not entry.is_symlink() and ours(entry))
    )


def replace_folder(target: Path, fill: Callable[[Path], None]) -> None:
    """Fill a staging folder, then swap its files in for the old ones of `target` (a path resolved by the caller,
    whose entries it checked are all the command's own: see foreign_entries).

    Until the swap the old files are untouched, so a failure (or Ctrl-C) while filling leaves them as they were,
    and the half-filled folder is removed. An existing `target` stays the same folder (its files are swapped,
    not the folder): a shell sitting in it (`--out .`) and links to it still find the new files. The moves of
    the swap are not one atomic step; a crash between them leaves hidden `.staging.PID.tmp` / `.old.PID.tmp`
    folders, which the next run removes.
    """
    if not target.is_dir():
        staging = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        _fill(staging, fill)
        staging.rename(target)
        return
    for leftover in target.iterdir():
        if _STAGING.match(leftover.name) and leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
    staging, previous = target / f".staging.{os.getpid()}.tmp", target / f".old.{os.getpid()}.tmp"
    staging.mkdir()
    _fill(staging, fill)
    previous.mkdir()
    for entry in list(target.iterdir()):
        if entry not in (staging, previous):
            entry.rename(previous / entry.name)
    for entry in list(staging.iterdir()):
        entry.rename(target / entry.name)
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(previous, ignore_errors=True)


def _fill(staging: Path, fill: Callable[[Path], None]) -> None:
    try:
        fill(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


_STAGING = re.compile(r"^\.(staging|old)\.\d+\.tmp$")  # replace_folder's own, inside the folder it replaces


def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table (cells with `|` escaped)."""
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines) + "\n"


def number(value: float | int | None) -> str:
    """A metric as a person reads it: 4 significant digits, thousands for large values, '-' when unknown."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return "-"
    if isinstance(value, int) or (abs(value) >= 1000 and float(value).is_integer()):
        return f"{int(value):,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def duration(seconds: float | None) -> str:
    """12.3 s, 4 min 05 s, 2 h 07 min."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not math.isfinite(seconds):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
