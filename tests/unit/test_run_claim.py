"""A run that fails before training removes what it wrote and nothing else: never a folder that holds
another run, however the runs started in one tree interleave (SLURM arrays, two terminals in a fresh checkout)."""

from __future__ import annotations

import threading
from pathlib import Path

from trainer.lifecycle.claim import RunClaim


def test_a_roll_back_leaves_the_parents_it_made_when_another_run_started_in_them(tmp_path: Path) -> None:
    root = tmp_path / "runs" / "digits_cnn"
    failing = RunClaim.make(root / "b", unique=True)  # makes runs/ and runs/digits_cnn/
    training = RunClaim.make(root / "a", unique=True)
    (training.run_dir / "metrics.csv").write_text("step\n")
    (failing.run_dir / "config.yaml").write_text("name: b\n")
    failing.roll_back()
    assert not (root / "b").exists()
    assert (root / "a" / "metrics.csv").read_text() == "step\n"
    training.release()


def test_a_roll_back_removes_the_parents_it_made_once_they_are_empty(tmp_path: Path) -> None:
    claim = RunClaim.make(tmp_path / "runs" / "digits_cnn" / "b", unique=True)
    (claim.run_dir / "config.yaml").write_text("name: b\n")
    claim.roll_back()
    assert list(tmp_path.iterdir()) == []


def test_many_runs_starting_at_once_in_one_fresh_tree_keep_every_run_that_trained(tmp_path: Path) -> None:
    root = tmp_path / "runs" / "digits_cnn"
    kept: list[Path] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(24)

    def start(index: int) -> None:
        try:
            barrier.wait()
            claim = RunClaim.make(root / "20261203-000000", unique=True)  # one default name: suffixes -1, -2, ...
            (claim.run_dir / "config.yaml").write_text(f"run {index}\n")
            if index % 2:
                claim.roll_back()  # failed before training
            else:
                claim.commit()
                kept.append(claim.run_dir)
                claim.release()
        except BaseException as err:  # surfaced below: a thread's failure would otherwise be lost
            errors.append(err)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(kept) == 12 and len(set(kept)) == 12
    assert sorted(root.iterdir()) == sorted(kept)  # every kept run there, no failed one left behind
    assert sorted((path / "config.yaml").read_text() for path in kept) == sorted(f"run {i}\n" for i in range(0, 24, 2))
