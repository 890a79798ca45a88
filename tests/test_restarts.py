"""A process killed at any moment, checkpoint writes included, never leaves a checkpoint that resume
cannot load."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainer.checkpoints import read_training_checkpoint

pytestmark = pytest.mark.distributed
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
DIGITS = ("trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1", "model.dropout=0")


def test_kill_9_at_random_moments_never_breaks_resume(tmp_path: Path) -> None:
    """Writes a checkpoint at every step and kills the process at random moments, several times;
    each time `resume=` must load the newest complete checkpoint and carry on."""
    from trainer.run.run_dir import newest_complete_checkpoint

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
