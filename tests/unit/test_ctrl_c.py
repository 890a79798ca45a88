"""Ctrl-C that lands inside an import: a run defers it to the end of the import (raised inside, a library
that swallows it would carry on with a half-made module; numpy's then recurses without end)."""

from __future__ import annotations

import importlib
import signal
import sys
from pathlib import Path

import pytest
from helpers import SELF_INTERRUPTING_MODULE

from trainer.cluster.signals import Interrupted, StopRequest


def test_a_ctrl_c_inside_an_import_during_set_up_interrupts_once_the_import_is_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "interrupts_its_import.py").write_text(SELF_INTERRUPTING_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "interrupts_its_import", raising=False)
    previous = signal.getsignal(signal.SIGINT)
    with pytest.raises(Interrupted, match="before training started"), StopRequest().installed():
        module = importlib.import_module("interrupts_its_import")
        # The import was left alone and finished whole; the run sees the interruption at its next check.
        assert module.IMPORT_FINISHED and not hasattr(module, "INTERRUPTION_SWALLOWED")
    assert signal.getsignal(signal.SIGINT) is previous


def test_a_ctrl_c_outside_an_import_during_set_up_interrupts_at_once() -> None:
    with StopRequest().installed() as stop:
        with pytest.raises(Interrupted):
            signal.raise_signal(signal.SIGINT)
        assert not stop.requested  # an interruption, not a request to save


def test_a_ctrl_c_inside_an_import_during_training_is_a_stop_request(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "interrupted_while_training.py").write_text(SELF_INTERRUPTING_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    with StopRequest().installed() as stop:
        stop.begin_training()
        module = importlib.import_module("interrupted_while_training")
        assert module.IMPORT_FINISHED and stop.signal_name == "SIGINT"
