"""The test counts fit saves for `trainer report`: taken only as fit writes them, for the checkpoint they name,
and nothing else read or shown (trainer/report/saved_confusion.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from trainer.report.saved_confusion import Confusion, save_confusion, saved_confusion

NAMES = ["cat", "dog", "fox"]
MATRIX = [[5, 1, 0], [0, 6, 0], [1, 0, 7]]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "epoch0-step9.ckpt").write_bytes(b"weights")
    (tmp_path / "inputs.json").write_text(json.dumps({"label_names": NAMES}))
    save_confusion(tmp_path, Confusion(MATRIX, NAMES, "test", tmp_path / "checkpoints" / "epoch0-step9.ckpt"))
    return tmp_path


def _saved(run_dir: Path) -> Confusion | None:
    return saved_confusion(run_dir, run_dir / "checkpoints" / "epoch0-step9.ckpt")


def _doctor(run_dir: Path, **fields: object) -> None:
    path = run_dir / "test_confusion.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def test_the_counts_come_back_for_the_checkpoint_they_were_saved_for(run_dir: Path) -> None:
    saved = _saved(run_dir)
    assert saved is not None and saved.matrix == MATRIX and saved.names == NAMES and saved.examples == 20


@pytest.mark.parametrize(
    "fields",
    [
        {"matrix": [[1, 0], [0, 1]], "names": ["cat", "dog"]},  # another class count than the run's
        {"names": ["0", "1", "2"]},  # another data set's names
        {"matrix": [[5, 1, 0], [0, 6, 0], [1, 0, 2**60]]},  # more than a float holds exactly
        {"matrix": [[5, 1, 0], [0, True, 0], [1, 0, 7]]},
        {"matrix": [[5, 1, 0], [0, -6, 0], [1, 0, 7]]},
        {"matrix": [[5, 1, 0.5], [0, 6, 0], [1, 0, 7]]},
        {"matrix": [[5, 1], [0, 6], [1, 0]]},
        {"matrix": []},
        {"split": "train"},
        {"checkpoint": "../epoch0-step9.ckpt"},
        {"bytes": 1},
    ],
)
def test_counts_that_are_not_what_fit_writes_are_not_taken(run_dir: Path, fields: dict) -> None:
    _doctor(run_dir, **fields)
    assert _saved(run_dir) is None


def test_a_rewritten_checkpoint_is_not_the_one_counted(run_dir: Path) -> None:
    checkpoint = run_dir / "checkpoints" / "epoch0-step9.ckpt"
    stat = checkpoint.stat()
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert _saved(run_dir) is None


@pytest.mark.parametrize("kind", ["nested", "fifo", "link", "folder", "bytes", "list"])
def test_a_file_that_is_not_json_from_fit_is_never_read_whole_nor_opened_if_special(run_dir: Path, kind: str) -> None:
    path = run_dir / "test_confusion.json"
    path.unlink()
    if kind == "nested":
        path.write_text("[" * 100_000 + "]" * 100_000)
    elif kind == "fifo":
        os.mkfifo(path)  # opening it for reading would block
    elif kind == "link":
        path.symlink_to("/dev/zero")
    elif kind == "folder":
        path.mkdir()
    elif kind == "bytes":
        path.write_bytes(b"\xff\xfe{\x00")
    else:
        path.write_text("[1, 2]")
    assert _saved(run_dir) is None
