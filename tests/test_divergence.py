"""A NaN or infinite loss stops the run with the step named, and leaves the last good checkpoint intact.

Two guards keep that promise (trainer.lifecycle.divergence): the device one (fused optimizer: the bad
step is skipped by the optimizer kernel, the host learns of it a step or two later) and the host one
(an unfused optimizer, DeepSpeed, fp16). Both are run here, single-process and on two DDP ranks.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from trainer.lifecycle.checkpoints import read_training_checkpoint

# A learning rate of 1e12 sends SGD's weights to infinity within a few steps: a real divergence.
DIVERGING = ["digits_cnn", "optim.name=sgd", "optim.lr=1e12", "scheduler.name=none", "model.batch_norm=false",
             "trainer.max_steps=200", "checkpoint.every_n_train_steps=1",
             "trainer.enable_progress_bar=false"]  # fmt: skip


@pytest.mark.parametrize(
    ("guard", "words"),
    [
        ("device", []),
        ("host", ["optim.fused=false"]),
        pytest.param("device, 2 ranks", ["trainer.devices=2", "trainer.strategy=ddp"], marks=pytest.mark.distributed),
        # FSDP2 steps with torch's foreach kernels (no fused optimizer): the host guard, on sharded weights.
        pytest.param(
            "host, 2 ranks (fsdp)", ["trainer.devices=2", "trainer.strategy=fsdp"], marks=pytest.mark.distributed
        ),
    ],
)
def test_a_diverging_run_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    cli, main_cli, tmp_path: Path, guard: str, words: list[str]
) -> None:
    run_dir = tmp_path / "run"
    command = cli if "ranks" in guard else main_cli  # ranks: real worker processes, started by the console script
    result = command("fit", *DIVERGING, *words, f"run_dir={run_dir}")
    assert result.returncode == 3, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    found = re.match(r"error: (loss|loss or gradients) (is|are) not finite at step (\d+)", line)
    assert found, line
    assert found.group(1) == ("loss" if guard.startswith("host") else "loss or gradients")
    failed_step = int(found.group(3))

    checkpoint = read_training_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert checkpoint.global_step == failed_step - 1  # the step before the divergence
    assert all(torch.isfinite(t).all() for t in checkpoint.state_dict.values() if t.is_floating_point())
    assert not (run_dir / "checkpoints" / "last.ckpt.partial").exists()
