"""Workers die, jobs restart: torchrun's elastic restart continues the run, and a process killed at any
moment (checkpoint writes included) never leaves a checkpoint that resume cannot load."""

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


def test_torchrun_restarts_after_a_worker_is_killed_and_the_run_completes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--max-restarts=1",
        "-m", "trainer", "fit", "digits_cnn", *DIGITS, "trainer.max_steps=80", "checkpoint.every_n_train_steps=10",
        f"run_dir={run_dir}",
    ]  # fmt: skip
    torchrun = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    deadline, killed_at = time.monotonic() + 300, None
    while time.monotonic() < deadline and torchrun.poll() is None and killed_at is None:
        last = run_dir / "checkpoints" / "last.ckpt"
        if last.is_file() and (step := read_training_checkpoint(last).global_step) >= 20:
            workers = _worker_pids(torchrun.pid)
            if 1 in workers:
                os.kill(workers[1], signal.SIGKILL)
                killed_at = step
        time.sleep(0.05)
    out, err = torchrun.communicate(timeout=600)
    assert killed_at is not None, "the run ended before a worker could be killed"
    assert torchrun.returncode == 0, err.decode()[-4000:]
    summary = json.loads(out)
    assert summary["global_step"] == 80 and summary["run_dir"] == str(run_dir)
    # The restarted workers resumed from the checkpoint instead of starting over: the early steps
    # were logged once, by the first round only.
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
