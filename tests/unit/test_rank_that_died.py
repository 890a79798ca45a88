"""Which rank's death ended a multi-process run, from torchrun's failure records (trainer.cluster.peers)."""

from __future__ import annotations

import signal
from types import SimpleNamespace

from trainer.cluster.launch import EXIT_PROCESS_DIED, STATUS_KEY, ranks_that_lost_a_peer
from trainer.cluster.peers import rank_that_died


def _failure(exitcode: int, timestamp: int, status: int | None = None) -> SimpleNamespace:
    """What torchrun records of a failed worker; `status`: the exit status the worker wrote beside it."""
    data = {} if status is None else {"message": "error: ...", STATUS_KEY: status}
    return SimpleNamespace(exitcode=exitcode, timestamp=timestamp, error_file_data=data)


def _died(failures: dict[int, SimpleNamespace]) -> tuple[int, str] | None:
    return rank_that_died(failures, ranks_that_lost_a_peer(failures))


def test_the_silent_rank_is_named_when_the_others_lost_a_peer() -> None:
    failures = {0: _failure(EXIT_PROCESS_DIED, 100, EXIT_PROCESS_DIED), 1: _failure(-signal.SIGKILL, 99)}
    assert _died(failures) == (1, "killed by SIGKILL")


def test_a_rank_killed_first_is_named_when_the_others_were_still_starting() -> None:
    # rank 1 killed; the agent then stopped rank 0 with SIGTERM in the same second, before it said anything
    failures = {0: _failure(-signal.SIGTERM, 100), 1: _failure(-signal.SIGKILL, 100)}
    assert _died(failures) == (1, "killed by SIGKILL")


def test_no_death_is_claimed_for_other_failures() -> None:
    # bad input on rank 1 first, rank 0 stopped by the agent after it
    assert _died({0: _failure(-signal.SIGTERM, 101), 1: _failure(2, 100, status=2)}) is None
    # a crash (its traceback printed), the other rank stopped, or the other rank lost its peer
    assert _died({0: _failure(1, 100), 1: _failure(-signal.SIGTERM, 101)}) is None
    assert _died({0: _failure(EXIT_PROCESS_DIED, 100, EXIT_PROCESS_DIED), 1: _failure(1, 100)}) is None
    # every rank said why
    assert _died({0: _failure(2, 100, status=2), 1: _failure(2, 100, status=2)}) is None


def test_where_to_go_on_names_the_checkpoint_resume_would_take(tmp_path) -> None:
    from trainer.cluster.peers import where_to_go_on

    (tmp_path / "checkpoints").mkdir()
    assert "saved no checkpoint yet" in where_to_go_on(tmp_path, "digits_cnn")
    # killed before its first last.ckpt, after a best-k one: resume continues from that
    (tmp_path / "checkpoints" / "epoch0-step41.ckpt").write_bytes(b"weights")
    line = where_to_go_on(tmp_path, "digits_cnn")
    assert f"its newest checkpoint is {tmp_path / 'checkpoints' / 'epoch0-step41.ckpt'}" in line
    assert f"continue with `trainer fit digits_cnn resume={tmp_path}`" in line


def test_the_torchrun_wrapper_exits_with_the_status_of_the_rank_that_caused_the_failure(tmp_path) -> None:
    from trainer.cluster.torchrun import _first_failure_status

    def status(failures: dict[int, SimpleNamespace]) -> int:
        return _first_failure_status(SimpleNamespace(failures=failures), tmp_path)

    lost = _failure(EXIT_PROCESS_DIED, 100, EXIT_PROCESS_DIED)  # rank 0 only lost its peer, in the same second
    assert status({0: lost, 1: _failure(2, 100, status=2)}) == 2  # bad input on rank 1
    assert status({0: lost, 1: _failure(1, 100)}) == 1  # a crash on rank 1, its traceback in the log
    assert status({0: lost, 1: _failure(-signal.SIGKILL, 100)}) == EXIT_PROCESS_DIED
