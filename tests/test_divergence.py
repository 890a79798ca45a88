"""A NaN or infinite loss stops the run with the step named, and leaves the last good checkpoint intact."""

from __future__ import annotations

from pathlib import Path

import torch

from trainer.lifecycle.checkpoints import read_training_checkpoint


def test_a_diverging_run_stops_naming_the_step_and_keeps_the_last_good_checkpoint(cli, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # A learning rate of 1e12 sends SGD's weights to infinity within a few steps: a real divergence.
    result = cli(
        "fit", "digits_cnn", "optim.name=sgd", "optim.lr=1e12", "scheduler.name=none", "model.batch_norm=false",
        "trainer.max_steps=200", "checkpoint.every_n_train_steps=1", f"run_dir={run_dir}",
        "trainer.enable_progress_bar=false",
    )  # fmt: skip
    assert result.returncode == 3, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: loss is not finite at step ")
    failed_step = int(line.split("at step ")[1].split()[0])

    checkpoint = read_training_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert checkpoint.global_step == failed_step - 1  # the step before the divergence
    assert all(torch.isfinite(t).all() for t in checkpoint.state_dict.values() if t.is_floating_point())
    assert not (run_dir / "checkpoints" / "last.ckpt.partial").exists()
