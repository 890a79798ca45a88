"""`trainer.checkpoints.load_exported`, the import path the README has documented since exports began.

The code lives in `trainer.export` (writing and loading exports) and `trainer.lifecycle.checkpoints`
(reading training checkpoints).
"""

from trainer.export import load_exported
from trainer.lifecycle.checkpoints import read_training_checkpoint

__all__ = ["load_exported", "read_training_checkpoint"]
