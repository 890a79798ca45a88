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

from trainer.lifecycle.run_dir import TEST_CONFUSION_FILE

_MAX_BYTES = 64 << 20  # a 2,000-class matrix is a few MB


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
    stat = checkpoint.stat()
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
    checkpoint (or of this one before it was rewritten), or the file is not what fit writes."""
    path = run_dir / TEST_CONFUSION_FILE
    try:
        if not path.is_file() or path.stat().st_size > _MAX_BYTES:  # never a FIFO's endless read
            return None
        record = json.loads(path.read_text())
        if not isinstance(record, dict) or any(record.get(k) != v for k, v in _identity(checkpoint).items()):
            return None
        matrix, names, split = record["matrix"], record["names"], record["split"]
    except (OSError, ValueError, KeyError):
        return None
    square = isinstance(matrix, list) and all(isinstance(row, list) and len(row) == len(matrix) for row in matrix)
    counts = square and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for row in matrix for n in row)
    if not counts or not isinstance(names, list) or len(names) != len(matrix) or split not in ("test", "validation"):
        return None
    return Confusion(matrix, [str(name) for name in names], split, checkpoint)
