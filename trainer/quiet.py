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
    # Lightning at every resume: the checkpoints folder is the run's own, of course not empty.
    (r"Checkpoint directory .* exists and is not empty",),
    # Lightning on every data set of fewer batches than log_every_n_steps: it counts logging steps across
    # epochs (the run logs every N optimizer steps all the same), so there is nothing to change.
    (r"The number of training batches \(\d+\) is smaller than the logging interval",),
    # Lightning under DeepSpeed, because the task defines configure_gradient_clipping (for the other
    # strategies): trainer.gradient_clip_val goes to DeepSpeed's own clipping, which the warning recommends.
    (r"Since DeepSpeed handles gradient clipping internally",),
    # DeepSpeed 0.19 gathers with an API torch 2.13 deprecates; DeepSpeed's to change.
    (r"`torch.distributed.all_gather_into_tensor` is deprecated",),
)
# Log lines, by logger.
_LOG_LINES = {
    # An advertisement for a hosted logger, at every Trainer (Lightning 2.6).
    # ... and, since trainer.build names Lightning's plain model summary (rich would replace it), a note that it
    # uses the one named.
    # ... and its banner when it starts the process group itself (FSDP2 on one process; under torchrun the trainer
    # has started it already).
    "lightning.pytorch.utilities.rank_zero": (
        "💡 Tip:",
        "Trainer already configured with model summary callbacks",
        "-" * 100 + "\ndistributed_backend=",
    ),
    # DeepSpeed's accelerator detection on a machine without CUDA: the trainer chose the CPU on purpose.
    "DeepSpeed": ("Setting accelerator to CPU",),
    # Lightning's note, on every rank, that DeepSpeed's process group is being set up.
    "lightning.pytorch.strategies.deepspeed": ("initializing deepspeed distributed",),
    "lightning.fabric.utilities.distributed": ("Initializing distributed:",),
}


class _DropLines(logging.Filter):
    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).lstrip().startswith(self.starts)


def silence_dependency_noise() -> None:
    """Install the filters (idempotent); before DeepSpeed is imported, for its import-time line."""
    for (message,) in _WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    for name, starts in _LOG_LINES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLines) for f in logger.filters):
            logger.addFilter(_DropLines(starts))


def progress_bars_follow_the_terminal() -> None:
    """datasets' progress bars (tokenising a large corpus takes minutes) only where a person watches: in a
    log file or a pipe they are noise, and they would sit in front of an error's one line."""
    import sys

    if not sys.stderr.isatty():
        import datasets

        datasets.disable_progress_bars()


def print_on_a_line_of_its_own(line: str, after_bars: bool = False) -> None:
    """On a terminal a progress bar may hold the cursor mid-line, and in a log file (a SLURM job's) a bar's
    last redraw ends in a carriage return, not a newline: the message starts a line of its own. `after_bars`:
    progress bars were on, so a log file needs that new line too."""
    import sys

    if after_bars or sys.stderr.isatty():
        print(file=sys.stderr)
    print(line, file=sys.stderr, flush=True)


def quiet_elastic_agent() -> None:
    """torchrun's agent logs its own view of every stop and failure (`Received 2 death signal`, `failed
    (exitcode: 2)`); the workers say what happened in one line each. torch sets each of its loggers' level
    itself, so the level is set on every one of them, once the agent's modules are imported."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("torch.distributed.elastic", "torch.distributed.launcher")):
            logging.getLogger(name).setLevel(logging.CRITICAL)
