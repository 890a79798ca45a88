"""The framework's CUDA path: every family in bf16-mixed, DeepSpeed ZeRO 1-3 and FSDP2 on one GPU, export and
generate from a GPU-trained checkpoint.

Each GPU test has a CPU twin that checks the same logic in every CI run: the bf16 training test is
parametrised over both accelerators here; ZeRO fit and resume is `test_distributed.py`'s
`test_interrupted_run_resumes_on_the_same_or_another_world_size` (2 processes over gloo), FSDP2's is
`test_fsdp.py`; export and
generate are `test_train.py`'s `test_fit_test_generate_through_the_cli` and `test_distributed.py`'s
`test_export_consolidates_zero3_into_a_plain_model`. `benchmarks/gpu_suite.sh` runs the `gpu` ones.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import FAST

ACCELERATORS = ["cpu", pytest.param("gpu", marks=pytest.mark.gpu)]
TINY = {
    "mnist_cnn": ["model.channels=[8,16]", "model.hidden_dim=32", "data.max_train_samples=256"],
    "imdb_lstm": ["model.hidden_size=32", "model.embed_dim=32", "data.max_length=64", "data.tokenizer.vocab_size=500",
                  "data.max_train_samples=256"],
    "imdb_transformer": ["model.d_model=32", "model.n_heads=4", "model.n_layers=1", "data.max_length=64",
                         "data.tokenizer.vocab_size=500", "data.max_train_samples=256"],
    "shakespeare_gpt": ["model.d_model=32", "model.n_heads=4", "model.n_layers=1", "data.block_size=32"],
}  # fmt: skip
DATA = {"mnist_cnn": "mnist", "imdb_lstm": "imdb", "imdb_transformer": "imdb", "shakespeare_gpt": "tiny_shakespeare"}


def _words(recipe: str, data: Path, accelerator: str, run_dir: Path, *more: str) -> list[str]:
    return [recipe, f"data.path={data}", *TINY[recipe], "data.global_batch_size=16", "data.max_eval_samples=64",
            "trainer.limit_val_batches=2", f"trainer.accelerator={accelerator}", "trainer.devices=1",
            "trainer.precision=bf16-mixed", f"run_dir={run_dir}", *more, *FAST]  # fmt: skip


@pytest.mark.parametrize("accelerator", ACCELERATORS)
@pytest.mark.parametrize("recipe", list(TINY))
def test_every_family_trains_a_few_steps_in_bf16(
    main_cli,
    recipe: str,
    accelerator: str,
    shared_data: Path,
    small_imdb: Path,
    small_shakespeare: Path,
    tmp_path: Path,
) -> None:
    data = {"mnist": shared_data / "mnist", "imdb": small_imdb, "tiny_shakespeare": small_shakespeare}[DATA[recipe]]
    result = main_cli("fit", *_words(recipe, data, accelerator, tmp_path / "run", "trainer.max_steps=6"))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["global_step"] == 6 and math.isfinite(summary["val"]["val/loss"])
    assert summary["flops_per_sample"] > 0
    if accelerator == "gpu":
        assert summary["peak_gpu_memory_bytes"] > 0
        assert summary["mfu"] is None or 0 < summary["mfu"] < 1  # known only for the GPUs in trainer.flops


@pytest.mark.gpu
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_deepspeed_fits_and_resumes_on_one_gpu(cli, stage: int, small_shakespeare: Path, tmp_path: Path) -> None:
    """The real CUDA engine over NCCL: a run stopped at step 4 and resumed to 8 ends where a straight run does."""
    # No schedule: a run of 4 steps extended to 8 then follows the straight run's learning rate.
    words = [
        "trainer.strategy=deepspeed_stage_" + str(stage),
        "checkpoint.every_n_train_steps=4",
        "scheduler.name=none",
    ]
    straight = cli("fit", *_words("shakespeare_gpt", small_shakespeare, "gpu", tmp_path / "s", "trainer.max_steps=8",
                                  *words))  # fmt: skip
    assert straight.returncode == 0, straight.stderr[-3000:]
    first = cli("fit", *_words("shakespeare_gpt", small_shakespeare, "gpu", tmp_path / "r", "trainer.max_steps=4",
                               *words))  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = cli("fit", "shakespeare_gpt", f"resume={tmp_path / 'r'}", "trainer.max_steps=8")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = json.loads(straight.stdout), json.loads(resumed.stdout)
    assert got["global_step"] == 8
    assert got["val"]["val/loss"] == pytest.approx(expected["val"]["val/loss"], rel=1e-3)


@pytest.mark.gpu
def test_fsdp_fits_resumes_and_exports_on_one_gpu(cli, main_cli, small_shakespeare: Path, tmp_path: Path) -> None:
    """FSDP2 on a one-rank NCCL mesh in bf16-mixed (MixedPrecisionPolicy): stopped at step 4 and resumed to 8 it ends
    where a straight run does, and its sharded checkpoint exports."""
    words = ["trainer.strategy=fsdp", "scheduler.name=none"]
    straight = cli("fit", *_words("shakespeare_gpt", small_shakespeare, "gpu", tmp_path / "s", "trainer.max_steps=8",
                                  *words))  # fmt: skip
    assert straight.returncode == 0, straight.stderr[-3000:]
    first = cli("fit", *_words("shakespeare_gpt", small_shakespeare, "gpu", tmp_path / "r", "trainer.max_steps=4",
                               *words))  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    assert (tmp_path / "r" / "checkpoints" / "last.ckpt" / "__0_0.distcp").is_file()
    resumed = cli("fit", "shakespeare_gpt", f"resume={tmp_path / 'r'}", "trainer.max_steps=8")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = json.loads(straight.stdout), json.loads(resumed.stdout)
    assert got["global_step"] == 8 and got["peak_gpu_memory_bytes"] > 0
    assert got["val"]["val/loss"] == pytest.approx(expected["val"]["val/loss"], rel=1e-3)
    for fmt in ("safetensors", "torchscript"):
        exported = main_cli("export", str(tmp_path / "r"), f"format={fmt}")
        assert exported.returncode == 0, exported.stderr[-3000:]


@pytest.mark.gpu
def test_export_and_generate_from_a_gpu_trained_checkpoint(cli, small_shakespeare: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    fitted = cli("fit", *_words("shakespeare_gpt", small_shakespeare, "gpu", run_dir, "trainer.max_steps=6"))
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    exported = cli("export", str(run_dir))
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert (Path(exported.stdout.strip()) / "model.safetensors").is_file()
    ckpt = f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}"
    generated = cli("generate", "shakespeare_gpt", *TINY["shakespeare_gpt"], ckpt, "prompt=ROMEO:", "max_new_tokens=20")
    assert generated.returncode == 0, generated.stderr[-3000:]
    assert generated.stdout.startswith("ROMEO:") and len(generated.stdout.removesuffix("\n")) == len("ROMEO:") + 20
