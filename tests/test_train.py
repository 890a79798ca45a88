"""Each model family trains on real data and its loss falls; the CLI's fit -> test -> generate path works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import FAST, fit, metric_series


def _falls(losses: list[float]) -> bool:
    head, tail = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    return tail < 0.85 * head


def test_cnn_trains_on_digits(tmp_path: Path) -> None:
    summary = fit("digits_cnn", "trainer.max_epochs=2", f"run_dir={tmp_path / 'run'}", *FAST)
    losses = metric_series(tmp_path / "run", "train/loss")
    assert len(losses) == summary["global_step"] > 20
    assert _falls(losses)
    assert summary["test"]["test/acc"] > 0.5


@pytest.mark.parametrize("family", ["lstm", "transformer"])
def test_text_classifiers_train_on_imdb(family: str, small_imdb: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / family
    summary = fit(
        f"imdb_{family}",
        f"data.path={small_imdb}",
        "data.max_length=64",
        "data.tokenizer.vocab_size=2000",
        # Twelve passes over 64 reviews: enough to see the loss fall (memorisation), cheap on CPU.
        "data.max_train_samples=64",
        "data.global_batch_size=16",
        "trainer.max_epochs=12",
        "optim.lr=5e-3",
        f"run_dir={run_dir}",
        *FAST,
    )
    assert _falls(metric_series(run_dir, "train/loss"))
    assert set(summary["test"]) >= {"test/acc", "test/precision", "test/recall", "test/f1", "test/loss"}
    assert (run_dir / "tokenizer.json").is_file()


@pytest.mark.parametrize("recipe", ["shakespeare_lstm", "shakespeare_gpt"])
def test_language_models_train_on_shakespeare(recipe: str, small_shakespeare: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / recipe
    summary = fit(
        recipe,
        f"data.path={small_shakespeare}",
        "data.block_size=32",
        "data.global_batch_size=16",
        *(["model.d_model=64", "model.n_heads=4"] if "gpt" in recipe else ["model.hidden_size=64"]),
        "trainer.max_steps=40",
        "scheduler.warmup_steps=5",
        f"run_dir={run_dir}",
        *FAST,
    )
    assert _falls(metric_series(run_dir, "train/loss"))
    assert summary["val"]["val/ppl"] == pytest.approx(torch.tensor(summary["val"]["val/loss"]).exp().item(), rel=0.05)


def test_fit_test_generate_through_the_cli(cli, small_shakespeare: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "gpt"
    common = [
        f"data.path={small_shakespeare}",
        "data.block_size=32",
        "model.d_model=32",
        "model.n_heads=4",
        "model.n_layers=1",
    ]
    fitted = cli("fit", "shakespeare_gpt", *common, "trainer.max_steps=5", f"run_dir={run_dir}", *FAST)
    assert fitted.returncode == 0, fitted.stderr[-2000:]
    for name in ("config.yaml", "metrics.csv", "summary.json", "tokenizer.json", "checkpoints/last.ckpt"):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == 5 and summary["samples_per_second"] > 0 and summary["wall_seconds"] > 0

    ckpt = f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}"
    tested = cli("test", "shakespeare_gpt", *common, ckpt)
    assert tested.returncode == 0, tested.stderr[-2000:]
    assert "val/loss" in json.loads(tested.stdout)  # no test split in one text file: its validation split

    generated = cli("generate", "shakespeare_gpt", *common, ckpt, "prompt=ROMEO:", "max_new_tokens=30")
    assert generated.returncode == 0, generated.stderr[-2000:]
    text = generated.stdout.removesuffix("\n")  # print's own newline only
    assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 30
