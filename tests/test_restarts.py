"""Workers die, jobs restart: torchrun's elastic restart continues the run, a death with no restart left ends
it in one line, and a process killed at any moment (checkpoint writes included) never leaves a checkpoint
that resume cannot load."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainer.lifecycle.checkpoints import read_training_checkpoint

pytestmark = pytest.mark.distributed
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
DIGITS = ("trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1", "model.dropout=0")


def _worker_pids(parent: int) -> dict[int, int]:
    """LOCAL_RANK -> pid of torchrun's workers, read from /proc as ps would."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != parent:
            continue
        for item in environ:
            if item.startswith(b"LOCAL_RANK="):
                found[int(item.split(b"=", 1)[1])] = int(entry.name)
    return found


def _kill_rank_1_once_past(step: int, run_dir: Path, torchrun: subprocess.Popen) -> int | None:
    """SIGKILL to rank 1 once last.ckpt holds `step` or more; the checkpoint's step, or None if the run ended."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and torchrun.poll() is None:
        last = run_dir / "checkpoints" / "last.ckpt"
        if last.is_file() and (saved := read_training_checkpoint(last).global_step) >= step:
            workers = _worker_pids(torchrun.pid)
            if 1 in workers:
                os.kill(workers[1], signal.SIGKILL)
                return saved
        time.sleep(0.05)
    return None


def test_torchrun_restarts_a_killed_worker_then_names_it_when_no_restart_is_left(tmp_path: Path) -> None:
    """torchrun as the launch scripts and SLURM start it (trainer.cluster.torchrun), with one restart: the first
    SIGKILL to a worker restarts the run from its checkpoint, the second ends it with one line naming the rank,
    the survivors' line with the checkpoint and the command that continues, and exit status 5."""
    run_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "trainer.cluster.torchrun", "--standalone", "--nproc_per_node=2", "--max-restarts=1",
        "-m", "trainer", "fit", "digits_cnn", *DIGITS, "trainer.max_steps=80", "checkpoint.every_n_train_steps=10",
        f"run_dir={run_dir}",
    ]  # fmt: skip
    torchrun = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    first = _kill_rank_1_once_past(20, run_dir, torchrun)
    assert first is not None, "the run ended before a worker could be killed"
    second = _kill_rank_1_once_past(first + 20, run_dir, torchrun)  # in the restarted round
    assert second is not None, "the restarted round ended before its worker could be killed"
    out, err = torchrun.communicate(timeout=600)
    stderr = err.decode()
    assert torchrun.returncode == 5, stderr[-4000:]
    assert "torchrun: rank 1 died (killed by SIGKILL) and the other ranks stopped" in stderr
    assert f"continue with `trainer fit digits_cnn resume={run_dir.resolve()}`" in stderr
    assert "Traceback" not in stderr and "ChildFailedError" not in stderr, stderr[-4000:]

    # The command it printed finishes the run; the restarted round resumed from the checkpoint instead of
    # starting over: the early steps were logged once, by the first round only.
    finish = subprocess.run([sys.executable, "-m", "trainer", "fit", "digits_cnn", f"resume={run_dir}"],
                            capture_output=True, text=True, env=ENV)  # fmt: skip
    assert finish.returncode == 0, finish.stderr[-3000:]
    summary = json.loads(finish.stdout)
    assert summary["global_step"] == 80 and summary["run_dir"] == str(run_dir)
    with open(run_dir / "metrics.csv") as f:
        early = [row for row in csv.DictReader(f) if row.get("train/loss") and int(row["step"]) < 10]
    assert len(early) == 10


def test_kill_9_at_random_moments_never_breaks_resume(tmp_path: Path) -> None:
    """Writes a checkpoint at every step and kills the process at random moments, several times;
    each time `resume=` must load the newest complete checkpoint and carry on."""
    from trainer.lifecycle.run_dir import newest_complete_checkpoint

    rng = random.Random(0)
    run_dir = tmp_path / "run"
    words = [*DIGITS, "trainer.max_steps=400", "checkpoint.every_n_train_steps=1", f"run_dir={run_dir}"]
    steps_seen = []
    for attempt in range(4):
        args = words if attempt == 0 else [f"resume={run_dir}"]
        process = subprocess.Popen([sys.executable, "-m", "trainer", "fit", "digits_cnn", *args],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)  # fmt: skip
        # Wait until training is under way, then kill at a random moment inside the checkpoint cadence.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if (run_dir / "checkpoints" / "last.ckpt").exists() and (
                not steps_seen
                or read_training_checkpoint(run_dir / "checkpoints" / "last.ckpt").global_step > steps_seen[-1]
            ):
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.5))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        checkpoint = newest_complete_checkpoint(run_dir)
        assert checkpoint is not None
        steps_seen.append(read_training_checkpoint(checkpoint).global_step)  # loads: not truncated
    assert steps_seen == sorted(steps_seen) and steps_seen[-1] > steps_seen[0]
    extend = f"trainer.max_steps={steps_seen[-1] + 5}"
    final = subprocess.run(
        [sys.executable, "-m", "trainer", "fit", "digits_cnn", f"resume={run_dir}", extend],
        capture_output=True, text=True, env=ENV,
    )  # fmt: skip
    assert final.returncode == 0, final.stderr[-3000:]
    assert json.loads(final.stdout)["global_step"] == steps_seen[-1] + 5
