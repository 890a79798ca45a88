"""The tiny GPT on a slice of Tiny Shakespeare that the multi-process tests train (DDP, ZeRO, FSDP2), and the
ways they start it: to the end, or stopped by SIGTERM the moment it has a run directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from trainer.lifecycle.checkpoints import read_training_checkpoint

# Small enough for 2 CPU processes on 2 cores; dropout off so that only float rounding separates runs.
TINY_GPT = (
    "model.d_model=32", "model.n_heads=4", "model.n_layers=1", "model.dropout=0", "data.block_size=32",
    "data.global_batch_size=16", "scheduler.warmup_steps=2", "optim.lr=3e-3", "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
)  # fmt: skip
ENV = {"OMP_NUM_THREADS": "1"}  # two processes share two cores
# The run the resume tests interrupt, under every strategy (and FSDP2's reference, DDP's straight run): 2 micro
# batches accumulated per step on 2 ranks, clipped, validated every 10 steps.
RESUMED_RUN = ("data.micro_batch_size=4", "trainer.max_steps=40", "trainer.gradient_clip_val=0.5",
               "trainer.val_check_interval=20")  # fmt: skip


def fit_tiny_gpt(cli, data: Path, *words: str) -> dict:
    result = cli("fit", "shakespeare_gpt", f"data.path={data}", *TINY_GPT, *words, env=ENV)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout)


def fit_until_interrupted(run_dir: Path, *words: str, data: Path | None = None) -> int:
    """Start a fit (a new run on `data`, or `resume=` words) and SIGTERM it the moment it says where its run is;
    return the step it stopped at.

    Event-driven, with no race against a fast machine: the signal arrives during set-up, where every rank
    records it (a SLURM warning can come that early too), and the run saves and stops at its first step."""
    new_run = (f"data.path={data}", *TINY_GPT, f"run_dir={run_dir}") if data is not None else ()
    command = [sys.executable, "-m", "trainer", "fit", "shakespeare_gpt", *new_run, *words]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **ENV},
                               text=True)  # fmt: skip
    assert process.stderr is not None
    for line in process.stderr:
        if line.startswith("trainer: run directory"):
            process.send_signal(signal.SIGTERM)  # to the launcher: it passes it on, the ranks stop together
            break
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    return read_training_checkpoint(run_dir / "checkpoints" / "last.ckpt").global_step
