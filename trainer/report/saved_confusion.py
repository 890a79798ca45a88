"""A classifier's confusion matrix, and the copy `trainer fit` saves from its final test.

The fit's last act on a classifier is to test its best checkpoint; counting the predictions by class there
costs nothing, while `trainer report` would otherwise load the model and the data and evaluate the test
split again (minutes on IMDB). The saved counts name the checkpoint they came from, with its size and
modification time: a report uses them only for that same file, and evaluates anything else itself
(trainer/report/confusion.py). No torch here: a report that finds the counts imports none.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.lifecycle.run_dir import INPUTS_FILE, TEST_CONFUSION_FILE

_MAX_BYTES = 64 << 20  # a 2,000-class matrix is a few MB
_MAX_CLASSES = 4096  # a matrix a report can draw
_MAX_COUNT = 2**53  # counts a float holds exactly (the plot's colours are floats)


@dataclass(frozen=True)
class Confusion:
    matrix: list[list[int]]  # rows: true class, columns: predicted class
    names: list[str]  # the data set's label names (a ClassLabel's), else the class indices
    split: str  # "test", or "validation" when the data set has no test split
    checkpoint: Path

    @property
    def examples(self) -> int:
        return sum(map(sum, self.matrix))

    @property
    def accuracy(self) -> float:
        return sum(self.matrix[i][i] for i in range(len(self.matrix))) / max(self.examples, 1)


def class_names(label_names: list[str] | None, num_classes: int) -> list[str]:
    """The label names when they cover every output; else the class indices (integer labels)."""
    names = list(label_names or [])
    return names if len(names) == num_classes else [str(index) for index in range(num_classes)]


def _identity(checkpoint: Path) -> dict[str, Any]:
    # A folder of shards (DeepSpeed, FSDP2) by its checksum record, written anew at every save.
    record = checkpoint / "checksums.sha256"
    stat = record.stat() if checkpoint.is_dir() and record.is_file() else checkpoint.stat()
    return {"checkpoint": checkpoint.name, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def save_confusion(run_dir: Path, confusion: Confusion) -> None:
    """Written whole or not at all, beside summary.json."""
    path = run_dir / TEST_CONFUSION_FILE
    record = {**_identity(confusion.checkpoint), "split": confusion.split, "names": confusion.names,
              "matrix": confusion.matrix}  # fmt: skip
    partial = path.with_name(path.name + f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(record) + "\n")
    os.replace(partial, path)


def saved_confusion(run_dir: Path, checkpoint: Path) -> Confusion | None:
    """The counts the fit saved for `checkpoint` as it is now; None when there are none, or they are of another
    checkpoint (or of this one before it was rewritten), or the file is not what fit writes, or they disagree
    with the run's label names (inputs.json)."""
    inputs = _read_record(run_dir / INPUTS_FILE) or {}
    label_names = inputs.get("label_names")
    if not (isinstance(label_names, list) and all(isinstance(name, str) for name in label_names)):
        label_names = None  # integer labels: the names are the class indices
    record = _read_record(run_dir / TEST_CONFUSION_FILE)
    if record is None or any(record.get(key) != value for key, value in _identity(checkpoint).items()):
        return None
    matrix, names, split = record.get("matrix"), record.get("names"), record.get("split")
    if not isinstance(matrix, list) or not 2 <= len(matrix) <= _MAX_CLASSES or split not in ("test", "validation"):
        return None
    square = all(isinstance(row, list) and len(row) == len(matrix) for row in matrix)
    if not square or not all(_is_count(n) for row in matrix for n in row):
        return None
    if label_names and len(label_names) != len(matrix):
        return None  # another class count than the run's
    if not isinstance(names, list) or names != class_names(label_names, len(matrix)):
        return None  # names of another data set
    return Confusion(matrix, names, split, checkpoint)


def _read_record(path: Path) -> dict[str, Any] | None:
    """The file's JSON object; None for anything else: a link or special file (never opened: a FIFO or a
    /proc file would block), more than _MAX_BYTES, not JSON, nested past the parser's depth."""
    try:
        if path.is_symlink() or not path.is_file():
            return None
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(descriptor, "rb") as file:
            data = file.read(_MAX_BYTES + 1)
        record = json.loads(data) if len(data) <= _MAX_BYTES else None
    except (OSError, ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_COUNT
