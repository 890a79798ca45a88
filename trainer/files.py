"""What a path the user gave is, before anything opens it.

A FIFO blocks a read forever, /dev/zero never ends and a socket cannot be read at all, so every command
reads regular files (and folders, where it asks for one) and says in one line what anything else is.
"""

from __future__ import annotations

import stat
from pathlib import Path

from trainer.errors import UserError

_SPECIAL_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def special_kind(path: Path) -> str | None:
    """What `path` is, in words, when it is neither a regular file nor a folder (links followed); None for
    those, and for a path that does not exist (its caller says so in its own words)."""
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return next((kind for is_kind, kind in _SPECIAL_KINDS if is_kind(mode)), "not a regular file")


def refuse_special(path: Path, what: str) -> None:
    """One line when `path` (named as `what` in the message) is a FIFO, device or socket."""
    kind = special_kind(path)
    if kind is not None:
        raise UserError(f"{what} {str(path)!r} is {kind}, not a file; give a regular file")


def refuse_special_inside(folder: Path, what: str) -> None:
    """The same for each entry of a folder that will be read through (data folders, image folders)."""
    for path in folder.rglob("*"):
        refuse_special(path, what)
