"""Throughput: training time counts training steps only; FLOPs, tokens and MFU reach the summary and the logs."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from helpers import FAST, metric_series

from trainer import api
from trainer.flops import dense_peak, training_flops
from trainer.models import build_model

VALIDATION_SLEEP = 2.0  # seconds per validation batch
WRITE_SLEEP = 0.5  # seconds per checkpoint write


class _SlowValidationAndWrites(L.Callback):
    """Makes validations and checkpoint writes slow enough that counting them as training would show."""

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if not trainer.sanity_checking:
            time.sleep(VALIDATION_SLEEP)

    def on_save_checkpoint(self, trainer: L.Trainer, *args: Any) -> None:  # inside each write
        time.sleep(WRITE_SLEEP)


def test_train_seconds_leave_out_validation_and_checkpoint_writes(tmp_path: Path) -> None:
    words = ["trainer.max_steps=12", "trainer.val_check_interval=4", "trainer.limit_val_batches=1",
             "checkpoint.every_n_train_steps=4", f"run_dir={tmp_path / 'run'}", *FAST]  # fmt: skip
    summary = api.fit(api.resolve_fit_config("digits_cnn", words), callbacks=[_SlowValidationAndWrites()])

    validations, writes = 3, 6  # at steps 4, 8, 12; each with a best-k and a last.ckpt write at least
    assert summary["val_seconds"] >= validations * VALIDATION_SLEEP
    assert summary["checkpoint_seconds"] >= writes * WRITE_SLEEP
    # Counted once each: were validation or writes inside train_seconds, the parts would exceed the whole.
    parts = summary["train_seconds"] + summary["val_seconds"] + summary["checkpoint_seconds"]
    assert summary["train_seconds"] > 0 and parts <= summary["wall_seconds"]
    assert summary["samples_per_second"] == pytest.approx(12 * 32 / summary["train_seconds"], rel=0.01)


def test_throughput_figures_reach_the_summary_and_the_logs(small_shakespeare: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "gpt"
    words = [f"data.path={small_shakespeare}", "model.d_model=32", "model.n_heads=4", "model.n_layers=1",
             "data.block_size=32", "trainer.log_every_n_steps=2", f"run_dir={run_dir}",
             "trainer.enable_progress_bar=false",
             # Two micro-batches per step, and a last step off the logging grid: still one row per window.
             "data.micro_batch_size=32", "trainer.max_steps=5"]  # fmt: skip
    summary = api.fit(api.resolve_fit_config("shakespeare_gpt", words))
    assert summary["flops_per_sample"] > 0
    assert summary["tokens_per_second"] == pytest.approx(summary["samples_per_second"] * 32, rel=0.01)
    assert summary["mfu"] is None  # no known peak for a CPU
    samples, tokens = (metric_series(run_dir, f"train/{unit}_per_second") for unit in ("samples", "tokens"))
    assert len(samples) == 2 and all(rate > 0 for rate in samples)  # at steps 2 and 4, once each
    assert tokens == pytest.approx([rate * 32 for rate in samples])


def _lstm_flops_per_token(input_size: int, hidden: int, layers: int, directions: int) -> int:
    """Training FLOPs of the gate matmuls: forward 2 * 4H * (input + H) per direction and layer, backward twice that."""
    total = 0
    for layer in range(layers):
        inputs = input_size if layer == 0 else hidden * directions
        total += directions * 3 * 2 * 4 * hidden * (inputs + hidden)
    return total


@pytest.mark.parametrize(
    ("task", "family", "kwargs", "inputs", "expected"),
    [
        # Packed sequences (counted on the CPU), bidirectional, two layers; the head counts once per sample.
        ("text_classification", "lstm",
         {"vocab_size": 500, "num_classes": 3, "embed_dim": 24, "hidden_size": 16, "num_layers": 2,
          "bidirectional": True, "pooling": "mean"},
         (torch.ones(1, 40, dtype=torch.long), torch.ones(1, 40, dtype=torch.long)),
         40 * _lstm_flops_per_token(24, 16, 2, 2) + 6 * 32 * 3),
        # The language model (counted on the meta device): the gate matmuls and the tied head.
        ("language_modeling", "lstm", {"vocab_size": 65, "embed_dim": 32, "hidden_size": 32},
         (torch.ones(1, 50, dtype=torch.long),),
         50 * (_lstm_flops_per_token(32, 32, 1, 1) + 6 * 32 * 65)),
        # GPT: 6N per token for the N weights of its matmuls, plus attention's 12 * layers * d_model * T.
        ("language_modeling", "transformer",
         {"vocab_size": 65, "max_len": 64, "d_model": 64, "n_heads": 4, "n_layers": 2},
         (torch.ones(1, 64, dtype=torch.long),),
         64 * (6 * (2 * (64 * 192 + 64 * 64 + 2 * 64 * 256) + 64 * 65) + 12 * 2 * 64 * 64)),
    ],
)  # fmt: skip
def test_flop_counts_match_the_analytic_counts(task, family, kwargs, inputs, expected) -> None:
    counted = training_flops(lambda: build_model(task, family, kwargs), inputs)
    assert counted == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize(
    ("device_name", "precision", "peak"),
    [
        ("NVIDIA H200", "bf16-mixed", 989.4e12),
        ("NVIDIA H100 80GB HBM3", "bf16-true", 989.4e12),
        ("NVIDIA H100 PCIe", "16-mixed", 756.5e12),
        ("NVIDIA A100-SXM4-80GB", "bf16-mixed", 312.0e12),
        ("NVIDIA H100 80GB HBM3", "32", 494.7e12),  # convolutions run on TF32 tensor cores by default
        ("NVIDIA H100 80GB HBM3", "64-true", None),
        ("Tesla T4", "16-mixed", None),  # not in the table: MFU is then null, not a guess
    ],
)
def test_dense_peaks_come_from_the_table(device_name: str, precision: str, peak: float | None) -> None:
    assert dense_peak(device_name, precision) == peak


def test_the_model_summary_counts_the_forward_flops_of_every_family(main_cli, small_imdb: Path, tmp_path: Path) -> None:
    # The LSTM is the hard case: fused oneDNN and cuDNN kernels hide its matmuls from a FLOP counter.
    words = [f"data.path={small_imdb}", "data.tokenizer.vocab_size=300", "data.max_length=32",
             "data.global_batch_size=16", "trainer.max_steps=2", f"run_dir={tmp_path / 'run'}", *FAST]  # fmt: skip
    result = main_cli("fit", "imdb_lstm", *words)
    assert result.returncode == 0, result.stderr[-3000:]
    total = re.search(r"^([\d.]+) (K|M|G)?\s+Total Flops$", result.stderr, re.MULTILINE)
    assert total, result.stderr[-3000:]
    forward = float(total[1]) * {"K": 1e3, "M": 1e6, "G": 1e9, None: 1}[total[2]]
    training = json.loads(result.stdout)["flops_per_sample"]  # forward and backward, at full length
    assert 0.2 * training < forward <= training / 3 * 1.01


def test_counting_flops_leaves_the_random_state_alone() -> None:
    # Counted at the first step of every session: a draw here would change a resumed run's dropout masks.
    torch.manual_seed(0)
    before = torch.get_rng_state()
    kwargs = {"in_channels": 1, "num_classes": 10, "channels": [8], "dropout": 0.5}
    assert training_flops(lambda: build_model("image_classification", "cnn", kwargs), (torch.ones(1, 1, 8, 8),)) > 0
    assert torch.equal(torch.get_rng_state(), before)
