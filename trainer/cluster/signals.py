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

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and not self.training:
            if not self._interrupted:  # a second Ctrl-C while the first unwinds changes nothing
                self._interrupted = True
                raise Interrupted("interrupted (Ctrl-C) before training started; nothing was saved")
            return
        if self.signum is None:
            self.signum = signum

    def install(self) -> None:
        """(Re)install the handlers: Lightning puts its own SIGTERM handler in at every fit, validate and test
        (it kills launcher children and broadcasts from inside the handler, which can hang a job), so the
        hooks that follow its start call this again."""
        if threading.current_thread() is threading.main_thread():  # Python's rule for signal handlers
            for signum in self.signals:
                signal.signal(signum, self._handle)

    @contextlib.contextmanager
    def installed(self, signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[StopRequest]:
        """Handlers in place for the whole of a run: set-up, training and the evaluations around it."""
        self.signals = signals
        on_main_thread = threading.current_thread() is threading.main_thread()
        previous = {signum: signal.getsignal(signum) for signum in signals} if on_main_thread else {}
        self.install()
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def signal_name(self) -> str | None:
        return signal.Signals(self.signum).name if self.signum is not None else None


@contextlib.contextmanager
def ctrl_c_exits_at_once() -> Iterator[None]:
    """Ctrl-C while libraries import (or while nothing is being written): one line, exit 130, at once.

    A KeyboardInterrupt raised inside an import leaves that module half-made; numpy's then recurses without
    end at its next import (RecursionError, seen when Ctrl-C reached `import torchmetrics`). Nothing exists
    yet to clean up, so the process ends from the handler. Where SIGINT is ignored (a backgrounded shell's
    job) it stays ignored."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN or threading.current_thread() is not threading.main_thread():
        yield
        return

    def exit_at_once(signum: int, frame: Any) -> None:
        os.write(2, b"error: interrupted (Ctrl-C); nothing was saved\n")
        os._exit(128 + signal.SIGINT)

    previous = signal.signal(signal.SIGINT, exit_at_once)
    try:
        yield
    except KeyboardInterrupt:  # a library swapped the handler back for a moment: the same one line, at once
        exit_at_once(signal.SIGINT, None)
    finally:
        signal.signal(signal.SIGINT, previous)
