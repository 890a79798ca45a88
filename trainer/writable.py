"""Whether a folder can be written: asked before a run does any work, so that a read-only, immutable or
full place is one clear line at the start instead of a traceback after training.

The question is put to the file system itself (a nameless temporary file), since permission bits do not
tell root about read-only mounts or immutable folders.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from trainer.errors import UserError


def check_writable(path: Path, what: str) -> None:
    """`path` (a folder, existing or not) can be created and written; nothing is left behind."""
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{what} {str(path)!r}: {str(existing)!r} is a file, not a folder; choose another {what}")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise UserError(
            f"{what} {str(path)!r} cannot be written ({str(existing)!r}: {err.strerror}); choose another {what}"
        ) from None
