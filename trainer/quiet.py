"""Output of our dependencies that a user cannot act on, silenced in one place (and why, line by line).

Everything else they print stays: progress, warnings about the user's own settings, errors.
"""

from __future__ import annotations

import logging
import warnings

# (module, message start) of warnings.warn calls.
_WARNINGS = (
    # Lightning 2.6 under SLURM: we start through srun + torchrun on purpose (slurm/train.sbatch), and off
    # SLURM an installed srun means nothing.
    (r"The `srun` command is available on your system but is not used",),
    # torchdata 0.11's StatefulDataLoader calls a torch API that torch 2.9+ deprecates; nothing to change here.
    (r"'set_vital' is deprecated",),
    # Lightning 2.6 on torch 2.13 uses a pytree API torch deprecates; Lightning's to fix.
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated",),
)
# Lines of Lightning's rank-zero info log.
_INFO_LINES = ("💡 Tip:",)  # an advertisement for a hosted logger


class _DropLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).lstrip().startswith(_INFO_LINES)


def silence_dependency_noise() -> None:
    for (message,) in _WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropLines) for f in logger.filters):
        logger.addFilter(_DropLines())
