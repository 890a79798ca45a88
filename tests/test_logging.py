"""Loggers: CSV always, TensorBoard and W&B (offline) on request; no secret ever reaches a file.

W&B keeps process-wide state, so these runs go through the CLI, one process each, as a user's would.
"""

from __future__ import annotations

from pathlib import Path

FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"  # the shape of a W&B API key
QUICK = ("trainer.max_steps=3", "trainer.enable_progress_bar=false")


def _fit(cli, *words: str, env: dict[str, str | None] | None = None) -> None:
    result = cli("fit", "digits_cnn", *QUICK, *words, env=env)
    assert result.returncode == 0, result.stderr[-3000:]


def _offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def test_wandb_offline_and_tensorboard_write_their_files_and_no_secret(cli, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _fit(cli, "logger=[tensorboard,wandb]", f"run_dir={run_dir}", env={"WANDB_API_KEY": FAKE_KEY})

    runs = _offline_runs(run_dir)
    assert len(runs) == 1
    assert runs[0].name.endswith((run_dir / "wandb_run_id").read_text().strip())
    assert list(runs[0].glob("run-*.wandb")), "the offline run has no data file"
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert (run_dir / "metrics.csv").is_file()
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert FAKE_KEY.encode() not in path.read_bytes(), f"API key written to {path}"


def test_wandb_mode_from_the_recipe(cli, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _fit(cli, "logger=wandb", "wandb.mode=offline", f"run_dir={run_dir}", env={"WANDB_MODE": None})
    assert len(_offline_runs(run_dir)) == 1


def test_a_resumed_run_logs_into_the_same_wandb_run(cli, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _fit(cli, "logger=wandb", f"run_dir={run_dir}")
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    _fit(cli, f"resume={run_dir}", "trainer.max_steps=5")
    runs = _offline_runs(run_dir)
    assert len(runs) == 2 and all(r.name.endswith(run_id) for r in runs)
