"""A run's life as a user meets it: where it is, how it stops, what a resume continues (the schedule, the
best-checkpoint record), what evaluation reads (the run's own config), and what it prints."""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from callbacks import SignalAt
from helpers import FAST, fit, metric_series

from trainer import api


def _lr_by_step(run_dir: Path) -> dict[int, float]:
    """The learning rate of each optimizer step (Lightning logs it, per parameter group, before the step)."""
    with open(run_dir / "metrics.csv") as f:
        return {
            int(row["step"]) + 1: float(row["lr-AdamW/pg1"]) for row in csv.DictReader(f) if row.get("lr-AdamW/pg1")
        }


@pytest.mark.parametrize(("first", "stop_at", "extended"), [(60, None, 70), (60, 30, 80)])
def test_extending_a_run_continues_its_learning_rate_schedule(tmp_path: Path, first, stop_at, extended) -> None:
    """digits_cnn: 20 warmup steps, then cosine to a floor of 5%. A run that ended at `first` (or stopped at
    `stop_at` on its way there) and is extended to `extended` decays on from where it was, never back up the
    old curve, and reaches the floor at the end."""
    run_dir = tmp_path / "run"
    words = ["scheduler.min_lr_ratio=0.05", f"trainer.max_steps={first}", f"run_dir={run_dir}", *FAST]
    api.fit(api.resolve_fit_config("digits_cnn", words), callbacks=[SignalAt(stop_at)] if stop_at else [])
    fit("digits_cnn", f"resume={run_dir}", f"trainer.max_steps={extended}")
    lr = _lr_by_step(run_dir)
    seam = stop_at or first
    after = [lr[step] for step in sorted(lr) if step >= seam]  # the seam and every step after it
    assert len(after) >= extended - seam
    assert all(b <= a * (1 + 1e-6) for a, b in zip(after, after[1:], strict=False)), after
    assert after[-1] == pytest.approx(0.05 * lr[20], rel=0.05)  # decayed to the floor by the new end


def test_extending_a_run_whose_schedule_reached_0_is_refused(main_cli, tmp_path: Path) -> None:
    """Its schedule is part of what a resume restores: it would train on at learning rate 0."""
    from helpers import one_error_line, snapshot

    run_dir = tmp_path / "run"
    fit("digits_cnn", "trainer.max_steps=25", "scheduler.warmup_steps=5", f"run_dir={run_dir}", *FAST)
    before = snapshot(run_dir)
    line = one_error_line(main_cli("fit", "digits_cnn", f"resume={run_dir}", "trainer.max_steps=40"))
    assert "reached 0 at step 25" in line and f"init_from='{run_dir}'" in line
    assert snapshot(run_dir) == before
    warm = main_cli("fit", "digits_cnn", f"init_from={run_dir}", "trainer.max_steps=2", f"run_dir={tmp_path / 'warm'}")
    assert warm.returncode == 0, warm.stderr[-3000:]  # the way the message names
    # ... and that run resumes as any other: its init_from is the record of where it began, not a conflict.
    resumed = main_cli("fit", "digits_cnn", f"resume={tmp_path / 'warm'}", "trainer.max_steps=4")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"init_from: {run_dir}" in (tmp_path / "warm" / "config.yaml").read_text()
    both = main_cli("fit", "digits_cnn", f"resume={tmp_path / 'warm'}", f"init_from={run_dir}")
    assert "resume continues this one: give one" in one_error_line(both)


def test_a_resumed_run_keeps_its_best_checkpoint_record(tmp_path: Path) -> None:
    """digits_cnn keeps the best checkpoint by val/acc (save_top_k=1); validation at each epoch end (41 steps)."""
    run_dir = tmp_path / "run"
    config = api.resolve_fit_config("digits_cnn", ["trainer.max_steps=100", f"run_dir={run_dir}", *FAST])
    stopped = api.fit(config, callbacks=[SignalAt(50)])
    assert stopped["stopped_by"] == "SIGTERM" and stopped["global_step"] == 50
    # last.ckpt, written after the epoch-0 validation, knows the best checkpoint so far.
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    record = next(state for key, state in saved.items() if key.startswith("BestCheckpoints"))
    assert Path(record["best_model_path"]).name == "epoch0-step41.ckpt"

    summary = fit("digits_cnn", f"resume={run_dir}")
    best_files = sorted(p.name for p in (run_dir / "checkpoints").glob("epoch*.ckpt"))
    assert len(best_files) == 1  # save_top_k=1 across both sessions: no file left from the first one
    assert Path(summary["best_checkpoint"]).name == best_files[0]
    with open(run_dir / "metrics.csv") as f:  # Lightning logs a validation at the step before its checkpoint's
        scores = {int(row["step"]) + 1: float(row["val/acc"]) for row in csv.DictReader(f) if row.get("val/acc")}
    assert sorted(scores) == [41, 82, 100]
    best_step = int(re.search(r"step(\d+)", best_files[0]).group(1))
    assert scores[best_step] == max(scores.values())


class _SignalInTest(L.Callback):
    def on_test_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        signal.raise_signal(signal.SIGTERM)


def test_a_stop_during_the_final_test_is_honoured(tmp_path: Path) -> None:
    config = api.resolve_fit_config("digits_cnn", ["trainer.max_steps=5", f"run_dir={tmp_path / 'run'}", *FAST])
    summary = api.fit(config, callbacks=[_SignalInTest()])
    assert summary["stopped_by"] == "SIGTERM" and summary["test"] == {}
    assert summary["global_step"] == 5  # training was over: its checkpoint is on disk
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 5


def test_the_stop_line_starts_a_line_of_its_own_in_a_log_file_after_progress_bars(tmp_path: Path) -> None:
    """A SLURM job's log: Lightning's bar ends its redraws with a carriage return, never a newline."""
    run_dir = tmp_path / "run"
    log = tmp_path / "job.log"
    command = [
        sys.executable,
        "-m",
        "trainer",
        "fit",
        "digits_cnn",
        "trainer.max_steps=100000",
        f"run_dir={run_dir}",
        "trainer.log_every_n_steps=1",
    ]  # fmt: skip  (progress bars on, as by default)
    with open(log, "w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        while not (run_dir / "metrics.csv").is_file() or not metric_series(run_dir, "train/loss"):
            assert process.poll() is None, log.read_text()[-3000:]
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=300) == 128 + signal.SIGTERM, log.read_text()[-3000:]
    text = log.read_bytes().decode()  # as written: read_text() would turn each carriage return into a newline
    assert "\r" in text  # the bars were there
    lines = text.split("\n")  # lines as a log viewer or grep shows them (Lightning redraws its bar after it)
    assert any(line.startswith("trainer: stopped by SIGTERM at step ") for line in lines), text[-1000:]


def test_a_run_says_where_it_is_and_a_stop_says_how_to_resume(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "trainer", "fit", "digits_cnn", "trainer.max_steps=100000", f"run_dir={run_dir}",
               *FAST]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in process.stderr:  # events, not time: the directory line, then the first logged step
        lines.append(line)
        if line.startswith("trainer: run directory"):
            break
    assert lines[-1].strip() == f"trainer: run directory {run_dir}"
    while not (run_dir / "metrics.csv").is_file() or not metric_series(run_dir, "train/loss"):
        if process.poll() is not None:
            raise AssertionError(process.stderr.read())
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    stop_line = stderr.strip().splitlines()[-1]
    match = re.fullmatch(
        r"trainer: stopped by SIGTERM at step (\d+); checkpoint (\S+); continue with `(.+)`", stop_line
    )
    assert match, stop_line
    step = int(match.group(1))
    assert Path(match.group(2)) == run_dir / "checkpoints" / "last.ckpt"
    # A stop does not run a validation pass: validation comes at epoch ends (41 steps) only (Lightning logs
    # it at the step before).
    with open(run_dir / "metrics.csv") as f:
        val_steps = [int(row["step"]) + 1 for row in csv.DictReader(f) if row.get("val/loss")]
    assert all(s % 41 == 0 for s in val_steps), val_steps
    # The printed command continues the run.
    words = [*match.group(3).split()[1:], f"trainer.max_steps={step + 2}"]
    resumed = subprocess.run([sys.executable, "-m", "trainer", *words], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(resumed.stdout)["global_step"] == step + 2


def test_test_and_generate_read_the_runs_own_config(main_cli, small_shakespeare: Path, tmp_path: Path) -> None:
    """No data.path, block size or model size on the command line: the checkpoint's run brings them."""
    run_dir = tmp_path / "gpt"
    fitted = main_cli("fit", "shakespeare_gpt", f"data.path={small_shakespeare}", "data.block_size=32",
                      "model.d_model=32", "model.n_heads=4", "model.n_layers=1", "trainer.max_steps=3",
                      f"run_dir={run_dir}", *FAST)  # fmt: skip
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    ckpt = f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}"
    tested = main_cli("test", "shakespeare_gpt", ckpt)
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert set(json.loads(tested.stdout)) >= {"val/loss", "val/ppl"}
    generated = main_cli("generate", "shakespeare_gpt", ckpt, "max_new_tokens=5")
    assert generated.returncode == 0 and generated.stdout.startswith("ROMEO:"), generated.stderr[-3000:]


def test_stdout_is_one_json_document_whatever_the_logger(cli, tmp_path: Path) -> None:
    result = cli("fit", "digits_cnn", "trainer.max_steps=2", "logger=[tensorboard,wandb]", f"run_dir={tmp_path / 'r'}",
                 *FAST)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "\x1b" not in result.stdout  # no terminal colour codes
    assert json.loads(result.stdout)["global_step"] == 2


def test_no_noise_a_user_cannot_act_on(cli, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = cli("fit", "digits_cnn", "trainer.max_steps=2", "logger=tensorboard", f"run_dir={run_dir}", *FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    for noise in ("litlogger", "srun", "weights_only", "deprecated", "Setting accelerator to CPU", "Traceback"):
        assert noise not in result.stderr, noise
    events = b"".join(p.read_bytes() for p in (run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert b"train/loss" in events and b"hp_metric" not in events
