"""Stop signals: SIGTERM, SIGINT (Ctrl-C) and SIGUSR1 ask a run to stop; the run decides where.

A handler only records which signal came; the training loop acts on it at the next optimizer-step
boundary (saving inside a handler could capture a half-updated model), and the final evaluations act
on it at the next batch. Before training starts there is nothing to save: Ctrl-C then interrupts at
once (`Interrupted`), while SIGTERM and SIGUSR1 are still recorded, so that a SLURM warning that comes
during set-up ends in a checkpoint at the first step and a requeue.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

from trainer.cluster.env import slurm_warning_file

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class Interrupted(Exception):
    """Ctrl-C before training started: nothing to save, the run ends at once (exit 130)."""

    signum = signal.SIGINT


class StopRequest:
    """Which stop signal came, if any. `training` turns Ctrl-C from an interruption into a request."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.signals: tuple[int, ...] = STOP_SIGNALS
        self.training = False
        self._interrupted = False
        self._interrupt_deferred = False

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and not self.training:
            if _importing(frame):  # raised here it would leave a half-made module: see install_ctrl_c_guard
                self._interrupt_deferred = True
            else:
                self._interrupt()
            return
        if self.signum is None:
            self.signum = signum

    def _interrupt(self) -> None:
        if not self._interrupted:  # a second Ctrl-C while the first unwinds changes nothing
            self._interrupted = True
            raise Interrupted("interrupted (Ctrl-C) before training started; nothing was saved")

    def honour_deferred_interrupt(self) -> None:
        """A Ctrl-C that came during an import interrupts here, the next point the run checks."""
        if self._interrupt_deferred:
            self._interrupt()

    def begin_training(self) -> None:
        """From here on, Ctrl-C saves a checkpoint instead of interrupting."""
        self.honour_deferred_interrupt()
        self.training = True

    def install(self) -> None:
        """(Re)install the handlers: Lightning puts its own SIGTERM handler in at every fit, validate and test
        (it kills launcher children and broadcasts from inside the handler, which can hang a job), so the
        hooks that follow its start call this again. A SLURM time-limit warning that came while this
        process could not yet receive it (see slurm/train.sbatch) counts as received now."""
        if threading.current_thread() is threading.main_thread():  # Python's rule for signal handlers
            for signum in self.signals:
                signal.signal(signum, self._handle)
        warning = slurm_warning_file()
        if self.signum is None and signal.SIGUSR1 in self.signals and warning and os.path.exists(warning):
            self.signum = signal.SIGUSR1

    @contextlib.contextmanager
    def installed(self, signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[StopRequest]:
        """Handlers in place for the whole of a run: set-up, training and the evaluations around it."""
        self.signals = signals
        on_main_thread = threading.current_thread() is threading.main_thread()
        previous = {signum: signal.getsignal(signum) for signum in signals} if on_main_thread else {}
        self.install()
        try:
            yield self
            self.honour_deferred_interrupt()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def signal_name(self) -> str | None:
        return signal.Signals(self.signum).name if self.signum is not None else None


def _importing(frame: Any) -> bool:
    """Whether the interrupted code runs inside an import (importlib's frames are on its stack)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _exit_interrupted(signum: int = signal.SIGINT, frame: Any = None) -> None:
    os.write(2, b"error: interrupted (Ctrl-C); nothing was saved\n")
    os._exit(128 + signal.SIGINT)


def _ctrl_c_may_be_handled_here() -> bool:
    # Where SIGINT is ignored (a backgrounded shell's job) it stays ignored; handlers belong to the main thread.
    return (
        signal.getsignal(signal.SIGINT) is not signal.SIG_IGN and threading.current_thread() is threading.main_thread()
    )


def install_ctrl_c_guard() -> None:
    """For the whole process: Ctrl-C inside an import ends the process at once (one line, exit 130);
    anywhere else it raises KeyboardInterrupt as usual.

    A KeyboardInterrupt raised inside an import leaves that module half-made, and a library that swallows
    it (an import guarded by a bare `except`) carries on: numpy then recurses without end at its next
    import (RecursionError, a traceback where Ctrl-C should be one line). Runs replace this guard with
    their StopRequest, which defers such a Ctrl-C to the end of the import instead."""
    if _ctrl_c_may_be_handled_here():

        def guard(signum: int, frame: Any) -> None:
            if _importing(frame):
                _exit_interrupted()
            raise KeyboardInterrupt

        signal.signal(signal.SIGINT, guard)


def ctrl_c_has_nothing_left_to_stop() -> None:
    """The command's work is done (a run's summary written, its result about to print): Ctrl-C during the
    exit that follows is ignored. Python restores SIGINT's default handler while it shuts down, and a
    Ctrl-C then killed a finished run's process without a word, exit 130 after a complete summary."""
    if _ctrl_c_may_be_handled_here():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def ctrl_c_exits_at_once() -> Iterator[None]:
    """Ctrl-C while nothing is being written (a config read and checked, predictions printed): one line,
    exit 130, at once, whatever the code then running does with a KeyboardInterrupt."""
    if not _ctrl_c_may_be_handled_here():
        yield
        return
    previous = signal.signal(signal.SIGINT, _exit_interrupted)
    try:
        yield
    except KeyboardInterrupt:  # a library swapped the handler back for a moment: the same one line, at once
        _exit_interrupted()
    finally:
        signal.signal(signal.SIGINT, previous)
