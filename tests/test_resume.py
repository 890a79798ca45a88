"""Resume is exact: a run stopped after k steps and resumed ends with bitwise the same weights."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from callbacks import SignalAt
from helpers import FAST, fit, logged_steps, metric_series

from trainer import api

# Dropout on, shuffling on, a warmup-then-cosine schedule: everything a resume has to restore.
# 1,293 training digits / 32 = 41 steps an epoch: step 30 is mid-epoch, 41 an epoch boundary.
COMMON = ("model.dropout=0.3", "trainer.max_steps=60", *FAST)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


@pytest.fixture(scope="session")
def straight(tmp_path_factory: pytest.TempPathFactory, session_cache: Path) -> Path:
    """The run every stopped-and-resumed one must end equal to, trained once for all of them."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TRAINER_CACHE", str(session_cache / "trainer"))
        fit("digits_cnn", *COMMON, f"run_dir={run_dir}")
    return run_dir


@pytest.mark.parametrize(("stop_at", "signum"), [(30, signal.SIGTERM), (41, signal.SIGINT), (47, signal.SIGUSR1)])
def test_stopped_and_resumed_run_matches_a_straight_run(straight: Path, tmp_path: Path, stop_at: int, signum) -> None:

    stopped = tmp_path / "stopped"
    config = api.resolve_fit_config("digits_cnn", [*COMMON, f"run_dir={stopped}"])
    summary = api.fit(config, callbacks=[SignalAt(stop_at, signum)])
    assert summary["stopped_by"] == signal.Signals(signum).name
    assert summary["global_step"] == stop_at and summary["test"] == {}
    assert torch.load(stopped / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == stop_at

    resumed = fit("digits_cnn", f"resume={stopped}")
    assert resumed["global_step"] == 60 and resumed["stopped_by"] is None
    # One metrics.csv holds the whole run, both sessions of it, and the same losses as the straight run.
    assert metric_series(stopped, "train/loss") == metric_series(straight, "train/loss")
    # ... each at its step, with one value per step and metric: the resumed session's first step does not
    # repeat the last logged one (Lightning's `epoch` column comes with every row, the same value).
    train_steps = [entry[:2] for entry in logged_steps(stopped) if entry[1].startswith(("train/", "lr-"))]
    assert train_steps == [entry[:2] for entry in logged_steps(straight) if entry[1].startswith(("train/", "lr-"))]
    assert_one_value_per_step_and_metric(stopped)

    expected, actual = _weights(straight), _weights(stopped)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name


def test_resume_last_continues_the_newest_run_in_place(tmp_path: Path) -> None:
    config = api.resolve_fit_config("digits_cnn", list(COMMON))
    first = api.fit(config, callbacks=[SignalAt(3)])
    summary = fit("digits_cnn", "resume=last")
    assert summary["global_step"] == 60
    runs = list((tmp_path / "runs" / "digits_cnn").iterdir())
    assert len(runs) == 1 and Path(summary["run_dir"]).resolve() == Path(first["run_dir"]).resolve()


def test_resume_can_extend_a_finished_run(tmp_path: Path) -> None:
    fit("digits_cnn", *COMMON, "trainer.max_steps=5", f"run_dir={tmp_path / 'run'}")
    summary = fit("digits_cnn", f"resume={tmp_path / 'run'}", "trainer.max_steps=8")
    assert summary["global_step"] == 8
    # A finished run's checkpoint is written after its last validation: its losses continue at step 5.
    assert [step for step, key, _ in logged_steps(tmp_path / "run") if key == "train/loss"] == list(range(8))
    assert_one_value_per_step_and_metric(tmp_path / "run", but=("epoch",))


def assert_one_value_per_step_and_metric(run_dir: Path, but: tuple[str, ...] = ()) -> None:
    """`but`: Lightning's `epoch` column, which a finished session's final test logs as the next epoch."""
    values: dict[tuple[int, str], set[float]] = {}
    for step, key, value in logged_steps(run_dir):
        if key not in but:
            values.setdefault((step, key), set()).add(value)
    assert all(len(logged) == 1 for logged in values.values()), {k: v for k, v in values.items() if len(v) > 1}


@pytest.mark.parametrize(("saved", "resumed"), [("false", "true"), ("true", "false")])
def test_a_run_resumes_under_another_optimizer_kernel(tmp_path: Path, saved: str, resumed: str) -> None:
    """A run saved with an unfused optimizer (as every run from before `optim.fused` was) resumes fused, and
    the reverse; the resumed optimizer steps with this run's kernel, and its weights stay finite."""
    run_dir = tmp_path / "run"
    fit("digits_cnn", *COMMON, "trainer.max_steps=5", f"optim.fused={saved}", f"run_dir={run_dir}")
    summary = fit("digits_cnn", f"resume={run_dir}", "trainer.max_steps=8", f"optim.fused={resumed}")
    assert summary["global_step"] == 8
    saved_groups = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["optimizer_states"][0]
    assert all(bool(group["fused"]) == (resumed == "true") for group in saved_groups["param_groups"])
    assert all(torch.isfinite(t).all() for t in _weights(run_dir).values() if t.is_floating_point())
