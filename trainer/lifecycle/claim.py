"""Rank 0's hold on its run directory, from the moment it decides where the run starts until training starts.

A run only changes its directory for good once training has started. Before that, the checks Lightning
makes when `fit` begins can still fail, and Ctrl-C can still come; either way the directory is left as it
was: a directory made for the run is removed (with the parents made for it), an old run that
`overwrite=true` replaces is put back, and a resumed run's files get their old contents back. `commit()`,
called as training starts, makes the changes final (the replaced run is deleted then).

The claim also holds the run's lock (an advisory flock on the directory itself, so that taking it writes
nothing, and the kernel drops it when the holder dies): `resume=` on a run that is still training, or two
new runs given the same `run_dir=` at once, would otherwise make two writers of one run.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
from pathlib import Path

from trainer.errors import UserError

PARENT_RACES = 100  # attempts to create a run directory while other runs' roll-backs remove empty parents
ASIDE = ".replaced-run"  # where the old run waits, inside its own directory, until the new one trains


class RunClaim:
    def __init__(self, run_dir: Path | None = None) -> None:
        self.run_dir = run_dir
        self.committed = run_dir is None  # nothing claimed (ranks other than 0): nothing to undo
        self._fd: int | None = None
        self._made: list[Path] = []  # folders this claim created, the deepest last
        self._before: set[Path] | None = None  # what an existing directory held before this session wrote
        self._backups: dict[Path, tuple[bytes, int, int]] = {}  # files it rewrites: bytes, access and change times
        self._aside: Path | None = None

    # ------------------------------------------------------------------ taking it

    @classmethod
    def make(cls, run_dir: Path, unique: bool = False) -> RunClaim:
        """Create `run_dir` (and its missing parents) and lock it. `unique`: a timestamped default name, so
        if another run took it in the same second, take the next free `-1`, `-2`, ... instead."""
        candidate, suffix = run_dir, 1
        for _ in range(PARENT_RACES):
            missing = [p for p in reversed(run_dir.parents) if not p.exists()]
            try:
                for parent in missing:
                    parent.mkdir(exist_ok=True)
                candidate.mkdir()
            except FileExistsError:
                if not unique:
                    claim = cls(candidate)
                    claim._made = list(missing)
                    return claim._locked()
                candidate = run_dir.with_name(f"{run_dir.name}-{suffix}")
                suffix += 1
                continue
            except FileNotFoundError:
                continue  # another run's roll-back removed a parent that had just emptied: make it again
            claim = cls(candidate)
            claim._made = [*missing, candidate]
            return claim._locked()
        raise UserError(f"could not create run directory {str(run_dir)!r}: its parent folders kept disappearing")

    @classmethod
    def existing(cls, run_dir: Path) -> RunClaim:
        return cls(run_dir)._locked()

    def _locked(self) -> RunClaim:
        assert self.run_dir is not None
        fd = os.open(self.run_dir, os.O_RDONLY)
        held_elsewhere = _try_lock(fd)
        if held_elsewhere is None:
            os.close(fd)
            return self  # a file system without locks: carry on unguarded
        if held_elsewhere:
            os.close(fd)
            self._made = [folder for folder in self._made if folder != self.run_dir]  # the other process's
            self._remove_made()
            raise UserError(
                f"run {str(self.run_dir)!r} is in use by another trainer process; wait for it to finish or stop it "
                "(SIGTERM saves a checkpoint), then resume it or choose another run_dir"
            )
        self._fd = fd
        return self

    @property
    def made_the_directory(self) -> bool:
        return self.run_dir is not None and self.run_dir in self._made

    # ------------------------------------------------------------------ changing the directory

    def keep_a_copy(self, *names: str) -> None:
        """Remember the directory's contents and these files' bytes, before this session writes into it."""
        assert self.run_dir is not None
        self._before = set(self.run_dir.rglob("*"))
        for name in names:
            path = self.run_dir / name
            if path.is_file():
                stat = path.stat()
                self._backups[path] = (path.read_bytes(), stat.st_atime_ns, stat.st_mtime_ns)

    def set_old_run_aside(self) -> None:
        """`overwrite=true`: the old run's files wait in a hidden folder until the new run trains."""
        assert self.run_dir is not None
        aside = self.run_dir / ASIDE
        aside.mkdir()
        for entry in list(self.run_dir.iterdir()):
            if entry != aside:
                entry.rename(aside / entry.name)
        self._aside = aside
        self._before = {aside}

    def commit(self) -> None:
        """Training has started: the changes are final."""
        if self.committed:
            return
        self.committed = True
        if self._aside is not None:
            shutil.rmtree(self._aside, ignore_errors=True)
        self._backups.clear()

    def roll_back(self) -> None:
        """Undo what this session did to the directory (before training started)."""
        if self.committed:
            return
        self.committed = True
        if self._before is not None:
            assert self.run_dir is not None
            added = [p for p in self.run_dir.rglob("*") if p not in self._before and not _inside(p, self._aside)]
            for path in sorted(added, key=lambda p: len(p.parts), reverse=True):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            for path, (content, accessed, modified) in self._backups.items():
                path.write_bytes(content)
                os.utime(path, ns=(accessed, modified))
            if self._aside is not None:
                for entry in list(self._aside.iterdir()):
                    entry.rename(self.run_dir / entry.name)
                self._aside.rmdir()
        self.release()
        self._remove_made()

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def _remove_made(self) -> None:
        """The run directory this claim made goes with what this run wrote into it (nobody else writes in a
        locked run). A parent it made goes only if empty: other runs may have started in it meanwhile."""
        for folder in reversed(self._made):
            if folder == self.run_dir:
                shutil.rmtree(folder, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    folder.rmdir()
        self._made = []


def _inside(path: Path, folder: Path | None) -> bool:
    return folder is not None and (path == folder or folder in path.parents)


def in_use(run_dir: Path) -> bool:
    """Whether another process holds the run's lock (asked without keeping it)."""
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        return bool(_try_lock(fd))
    finally:
        os.close(fd)


def _try_lock(fd: int) -> bool | None:
    """Take the exclusive flock on `fd` without waiting: False when taken, True when another process holds
    it, None when the file system has no locks."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        return True if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN) else None
    return False
