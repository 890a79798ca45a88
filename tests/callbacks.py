"""Lightning callbacks the tests put into in-process runs."""

from __future__ import annotations

import os
import signal

import lightning as L


class SignalAt(L.Callback):
    """Sends this process a real signal, as a user or a scheduler would, while step `step` runs.

    It fires as step `step` begins; the run notices at the next step boundary and stops after that step.
    """

    def __init__(self, step: int, signum: int = signal.SIGTERM) -> None:
        self.step, self.signum = step, signum
        self.sent = False

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step - 1 and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)
