"""Real multi-process training on CPU over gloo: DDP, DeepSpeed ZeRO 1-3, torchrun and the launch scripts.

Every run here is a real process group of 2 CPU processes, started the way a user starts one: by
Lightning's launcher (`trainer.devices=2`), by torchrun, or by the scripts in launch/.
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import REPO
from helpers import metric_series
from tiny_gpt import ENV, RESUMED_RUN, TINY_GPT, fit_tiny_gpt, fit_until_interrupted

from trainer.export import load_exported
from trainer.lifecycle.checkpoints import read_training_checkpoint

pytestmark = pytest.mark.distributed


@pytest.mark.parametrize(
    "strategy", ["ddp", "deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_3", "deepspeed_stage_2_offload"]
)
def test_each_strategy_trains_on_two_processes(cli, small_shakespeare: Path, tmp_path: Path, strategy: str) -> None:
    run_dir = tmp_path / strategy
    loggers = ("logger=[tensorboard,wandb]",) if strategy == "ddp" else ()  # W&B offline (conftest)
    summary = fit_tiny_gpt(
        cli, small_shakespeare, "trainer.devices=2", f"trainer.strategy={strategy}", "trainer.max_steps=6",
        "data.micro_batch_size=4", "trainer.gradient_clip_val=0.5", f"run_dir={run_dir}", *loggers,
    )  # fmt: skip
    assert summary["world_size"] == 2 and summary["grad_accum_steps"] == 2 and summary["global_step"] == 6
    losses = metric_series(run_dir, "train/loss")
    assert len(losses) == 6 and losses[-1] < losses[0]  # one row per optimizer step, logged by rank 0 only
    if loggers:
        # One W&B run (rank 0's), finished before the worker ended (it ends without interpreter finalization):
        # an unfinished offline run keeps only its 7-byte header, none of the 6 steps' losses.
        (offline_run,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
        assert offline_run.read_bytes().count(b"train/loss") >= 6
        assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    last = run_dir / "checkpoints" / "last.ckpt"
    if strategy.startswith("deepspeed"):
        # The recipe's batch, accumulation and clipping reached DeepSpeed's own engine config.
        states = next((last / "checkpoint").glob("*mp_rank_00_model_states.pt"))
        ds_config = torch.load(states, weights_only=True)["ds_config"]
        assert ds_config["train_micro_batch_size_per_gpu"] == 4
        assert ds_config["gradient_accumulation_steps"] == 2
        assert ds_config["gradient_clipping"] == 0.5
        assert ds_config["zero_optimization"]["stage"] == int(strategy.split("_")[2])
        assert len(list((last / "checkpoint").glob("*optim_states.pt"))) == 2  # one shard per rank
    else:
        assert last.is_file()


def test_one_and_two_processes_follow_the_same_loss_curve(cli, small_shakespeare: Path, tmp_path: Path) -> None:
    """Same seed and global batch: 1 process, 1 process accumulating 2 micro batches, and 2 processes see
    the same samples per step, so their validation losses agree to float rounding.
    Tolerance: 1e-4 relative over 12 steps (measured: about 1e-6)."""
    common = ("trainer.max_steps=12", "data.max_eval_samples=48")
    runs = {
        # val_check_interval counts batches, as in Lightning: 4 optimizer steps in each run.
        "one": ("trainer.devices=1", "trainer.val_check_interval=4"),
        "accumulating": ("trainer.devices=1", "data.micro_batch_size=8", "trainer.val_check_interval=8"),
        "two": ("trainer.devices=2", "trainer.strategy=ddp", "trainer.val_check_interval=4"),
    }
    curves = {}
    for name, words in runs.items():
        fit_tiny_gpt(cli, small_shakespeare, *common, *words, f"run_dir={tmp_path / name}")
        curves[name] = torch.tensor(metric_series(tmp_path / name, "val/loss"))
    assert len(curves["one"]) >= 3 and curves["one"][-1] < curves["one"][0] - 0.1  # it did learn
    for name in ("accumulating", "two"):
        torch.testing.assert_close(curves[name], curves["one"], rtol=1e-4, atol=0)


def test_synced_metrics_equal_single_process_ones(cli, main_cli, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    fitted = main_cli(
        "fit", "digits_cnn", "trainer.max_steps=5", f"run_dir={run_dir}", "trainer.enable_progress_bar=false"
    )
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    # 360 test digits over 2 ranks, and 357 (not a multiple of 2) to exercise the padded shard.
    for limit in ("test[:360]", "test[:357]"):
        metrics = []
        for devices, command in ((1, main_cli), (2, cli)):
            result = command(
                "test", "digits_cnn", f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}", f"trainer.devices={devices}",
                "trainer.accelerator=cpu", f"data.test_split={limit}", env=ENV,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr[-3000:]
            metrics.append(json.loads(result.stdout))
        assert metrics[0].keys() == metrics[1].keys() >= {"test/acc", "test/loss", "test/f1"}
        for key in metrics[0]:
            assert metrics[1][key] == pytest.approx(metrics[0][key], abs=1e-6), key


@pytest.mark.parametrize(
    ("strategy", "saved_on", "resumed_on", "rel"),
    [
        ("ddp", 2, 1, 1e-5),  # one checkpoint file: the same state on any world size
        ("deepspeed_stage_2", 2, 2, 1e-5),  # same world size: DeepSpeed's own shards, exact
        # Another world size: converted to DeepSpeed's universal format. Measured here: 0.6-0.7% apart
        # after 35-39 more steps (the merged optimizer state is not bit-identical), hence 2%.
        ("deepspeed_stage_2", 2, 1, 2e-2),
        ("deepspeed_stage_3", 1, 2, 2e-2),
    ],
)
def test_interrupted_run_resumes_on_the_same_or_another_world_size(
    cli, straight_runs, small_shakespeare: Path, tmp_path: Path, strategy, saved_on: int, resumed_on: int, rel: float
) -> None:
    """SIGTERM early in the run, resume with `resume=` on `resumed_on` processes: the run ends where an
    uninterrupted run on `saved_on` processes ends, within `rel` on the final validation loss."""
    common = (f"trainer.strategy={strategy}", *RESUMED_RUN)
    straight = straight_runs(small_shakespeare, *common, f"trainer.devices={saved_on}")

    run_dir = tmp_path / "run"
    stopped_at = fit_until_interrupted(run_dir, *common, f"trainer.devices={saved_on}", data=small_shakespeare)
    assert 0 < stopped_at < 40
    result = cli("fit", "shakespeare_gpt", f"resume={run_dir}", f"trainer.devices={resumed_on}", env=ENV)
    assert result.returncode == 0, result.stderr[-4000:]
    resumed = json.loads(result.stdout)
    assert resumed["global_step"] == 40 and resumed["world_size"] == resumed_on
    assert resumed["val"]["val/loss"] == pytest.approx(straight["val"]["val/loss"], rel=rel)


def test_export_consolidates_zero3_into_a_plain_model(cli, main_cli, small_shakespeare: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    fit_tiny_gpt(cli, small_shakespeare, "trainer.devices=2", "trainer.strategy=deepspeed_stage_3",
                 "trainer.max_steps=4", f"run_dir={run_dir}")  # fmt: skip
    exported = main_cli("export", str(run_dir))
    assert exported.returncode == 0, exported.stderr[-3000:]
    folder = Path(exported.stdout.strip())
    assert {p.name for p in folder.iterdir()} >= {"model.safetensors", "model.json", "config.yaml", "tokenizer.json"}

    # The run's own evaluation of its sharded checkpoint (`trainer test`, no test split: validation) ...
    tested = cli("test", "shakespeare_gpt", f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}", env=ENV)
    assert tested.returncode == 0, tested.stderr[-3000:]
    expected = json.loads(tested.stdout)["val/loss"]
    # ... equals the exported plain model's loss on the same validation blocks, computed here without Lightning.
    model = load_exported(folder)
    from trainer.config import load_config_file
    from trainer.data import DATA_MODULES

    cfg = load_config_file(run_dir / "config.yaml")
    data = DATA_MODULES[cfg.task](cfg.data, seed=cfg.seed, micro_batch_size=8, tokenizer_path=folder / "tokenizer.json")
    data.load()
    blocks = torch.stack([row["input_ids"] for row in data.val_set])
    with torch.no_grad():
        logits = model(blocks[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), blocks[:, 1:].flatten()).item()
    assert loss == pytest.approx(expected, rel=1e-5)

    # The sharded checkpoint exports as a graph too, and predicts what the run itself predicts.
    onnx = main_cli("export", str(run_dir), "format=onnx")
    assert onnx.returncode == 0, onnx.stderr[-3000:]
    greedy = ("ROMEO:", "--temperature", "0", "--max-new-tokens", "8")
    texts = [main_cli("predict", str(source), *greedy) for source in (Path(onnx.stdout.strip()), run_dir)]
    assert all(t.returncode == 0 for t in texts), texts[0].stderr[-3000:] + texts[1].stderr[-3000:]
    assert texts[0].stdout == texts[1].stdout and texts[0].stdout.startswith("ROMEO:")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("script", ["single_node.sh", "torchrun.sh"])
def test_launch_scripts_run_two_processes(script: str, small_shakespeare: Path, tmp_path: Path) -> None:
    import os

    run_dir = tmp_path / "run"
    env = {**os.environ, **ENV, "NPROC_PER_NODE": "2", "NNODES": "1", "MASTER_PORT": str(_free_port())}
    words = [f"data.path={small_shakespeare}", *TINY_GPT, "trainer.strategy=deepspeed_stage_3",
             "trainer.max_steps=3", f"run_dir={run_dir}"]  # fmt: skip
    result = subprocess.run(
        ["bash", str(REPO / "launch" / script), "shakespeare_gpt", *words],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stderr.startswith("+ ") and "-m trainer fit shakespeare_gpt" in result.stderr.splitlines()[0]
    summary = json.loads(result.stdout)  # one summary: rank 0 alone prints
    assert summary["world_size"] == 2 and summary["run_dir"] == str(run_dir)
    assert len(list(run_dir.glob("metrics.csv"))) == 1


def test_single_node_script_counts_its_processes_from_the_recipe(tmp_path: Path) -> None:
    import os

    script = str(REPO / "launch" / "single_node.sh")
    words = ["digits_cnn", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_steps=2",
             "trainer.enable_progress_bar=false", f"run_dir={tmp_path / 'run'}"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "NPROC_PER_NODE"} | ENV
    result = subprocess.run(["bash", script, *words], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "-m trainer fit digits_cnn trainer.devices=2" in result.stderr.splitlines()[0]
    assert json.loads(result.stdout)["world_size"] == 2
    # A launcher count that contradicts the recipe's: one line before anything starts.
    clash = subprocess.run(["bash", script, *words], capture_output=True, text=True, env={**env, "NPROC_PER_NODE": "3"})
    assert "would start 3 processes but the recipe asks trainer.devices=2" in _one_line_exit_2(clash)


def test_a_failure_on_every_worker_is_one_line_from_the_command(cli, small_shakespeare: Path, tmp_path: Path) -> None:
    """`trainer fit ... trainer.devices=2` runs torchrun's agent itself: the workers' failure is rank 0's line."""
    result = cli("fit", "shakespeare_gpt", f"data.path={small_shakespeare}", *TINY_GPT, "trainer.devices=2",
                 "data.text_column=words", f"run_dir={tmp_path / 'run'}", env=ENV)  # fmt: skip
    assert "data set has no column 'words'" in _one_line_exit_2(result)
    assert not (tmp_path / "run").exists()


def test_a_worker_that_dies_ends_the_run_in_one_line_naming_it_and_where_to_go_on(tmp_path: Path) -> None:
    """kill -9 on rank 1 of a 2-process run: rank 0's collective fails (gloo: "Connection reset by peer").
    One line names the rank, the newest checkpoint and the resume command; exit status 5; no traceback."""
    import os
    import signal
    import sys
    import time

    run_dir = tmp_path / "run"
    words = ["trainer.devices=2", "trainer.max_steps=9999", "checkpoint.every_n_train_steps=2", f"run_dir={run_dir}"]
    command = [sys.executable, "-m", "trainer", "fit", "digits_cnn", *words, "trainer.enable_progress_bar=false"]
    with open(tmp_path / "stderr.txt", "w") as log:  # a file, not a pipe: nothing blocks while the test waits
        launcher = subprocess.Popen(command, stderr=log, env={**os.environ, **ENV})
        deadline = time.monotonic() + 240
        while not (run_dir / "checkpoints" / "last.ckpt").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        os.kill(_worker_of_rank(launcher.pid, 1), signal.SIGKILL)
        launcher.wait(timeout=240)
    stderr = (tmp_path / "stderr.txt").read_text()
    assert launcher.returncode == 5 and "Traceback" not in stderr, stderr[-3000:]
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("error: rank 1 died (killed by SIGKILL) and the other ranks stopped"), line
    assert f"its newest checkpoint is {run_dir / 'checkpoints' / 'last.ckpt'}" in line
    assert f"continue with `trainer fit digits_cnn resume={run_dir}`" in line
    assert read_training_checkpoint(run_dir / "checkpoints" / "last.ckpt").global_step >= 2  # whole, loadable


def _worker_of_rank(launcher: int, rank: int) -> int:
    """The pid of the launcher's worker process of `rank` (its environment says RANK=...)."""
    for entry in Path("/proc").iterdir():
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environment = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if parent == launcher and f"RANK={rank}".encode() in environment:
            return int(entry.name)
    raise AssertionError(f"no worker of rank {rank} under process {launcher}")


def _one_line_exit_2(result) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("[20")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["trainer.strategy=ddp_magic"], "invalid value for 'trainer.strategy'"),
        (["trainer.strategy=deepspeed_stage_2", "deepspeed.config={zero_optimisation: {stage: 2}}"],
         "unknown DeepSpeed key 'zero_optimisation'"),
        (["trainer.strategy=deepspeed_stage_2", "deepspeed.config={zero_optimization: {stage: 2, bogus: 1}}"],
         "invalid DeepSpeed setting"),
        (["trainer.strategy=ddp", "deepspeed.offload_optimizer=true"], "need a DeepSpeed strategy"),
        (["trainer.strategy=fsdp", "deepspeed.offload_optimizer=true"], "need a DeepSpeed strategy"),
        (["trainer.strategy=ddp", "fsdp.block_class=Block"], "need an FSDP strategy"),
        (["trainer.strategy=fsdp", "trainer.precision=16-mixed"], "not trainer.precision=16-mixed; use bf16-mixed"),
        (["trainer.strategy=fsdp_cpu_offload"], "on CPU they are there already"),
        (["trainer.devices=2", "data.global_batch_size=15"], "does not divide over 2 processes"),
        (["data.global_batch_size=16", "data.micro_batch_size=3"], "does not divide"),
        (["trainer.accelerator=cpu", "trainer.devices=4096"], "more devices than exist"),
    ],
)  # fmt: skip
def test_bad_distributed_settings_are_one_line_and_exit_2(main_cli, tmp_path, words: list[str], expected: str) -> None:
    line = _one_line_exit_2(main_cli("fit", "shakespeare_gpt", "data.path=/tmp", *words))
    assert expected in line
    assert not (tmp_path / "runs").exists()


def test_plan_prints_batches_memory_and_launch_commands(main_cli) -> None:
    result = main_cli("plan", "shakespeare_gpt", "trainer.strategy=deepspeed_stage_3", "--nodes", "4",
                      "--gpus-per-node", "8", "--gpu-memory", "80GB")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "world size        32 processes" in out and "micro batch       2 per process" in out
    for strategy in ("ddp", "deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_3_offload", "fsdp",
                     "fsdp_shard_grad_op", "fsdp_cpu_offload"):  # fmt: skip
        assert f" {strategy} " in out
    assert out.count("torchrun --nnodes=4 --nproc_per_node=8") == 4
    assert "trainer fit shakespeare_gpt trainer.strategy=deepspeed_stage_3" in out
    assert "* deepspeed_stage_3" in out
    bad = main_cli("plan", "shakespeare_gpt", "--nodes", "3", "--gpus-per-node", "8")
    assert _one_line_exit_2(bad).endswith("use a multiple of 24")
    # Every printed field survives a shell: a hostile override comes back as the word given, an IPv6 head in
    # brackets; a head that is no host name is refused.
    odd = main_cli("plan", "shakespeare_gpt", "--head-node", "2001:db8::1", "generate.prompt=it's; rm -rf ~",
                   "--nodes", "2")  # fmt: skip
    command = next(line for line in odd.stdout.splitlines() if line.startswith("  node 0: ")).split(": ", 1)[1]
    words = shlex.split(command)
    assert "--rdzv_endpoint=[2001:db8::1]:29500" in words and words[-1] == "generate.prompt=it's; rm -rf ~"


@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "deepspeed_stage_3"])
def test_a_custom_model_trains_on_two_processes_and_exports(cli, main_cli, tmp_path: Path, strategy: str) -> None:
    """Your own nn.Module under DDP, FSDP2 and ZeRO-3 (both shard its parameters): a sharded run exports as a plain
    model."""
    from own_models import TASKS, project

    recipe = project(tmp_path / "project", *TASKS["image"], steps=6)
    run = tmp_path / "run"
    result = cli("fit", str(recipe), "trainer.devices=2", f"trainer.strategy={strategy}", "trainer.accelerator=cpu",
                 "data.micro_batch_size=8", f"run_dir={run}", "trainer.enable_progress_bar=false", env=ENV)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads(result.stdout)
    assert summary["world_size"] == 2 and summary["global_step"] == 6 and summary["grad_accum_steps"] == 2
    assert set(summary["test"]) >= {
        "test/acc",
        "test/loss",
    }  # ZeRO-3's best checkpoint too (see api._test_consolidated)
    if strategy != "ddp":
        exported = main_cli("export", str(run))
        assert exported.returncode == 0, exported.stderr[-3000:]
        model = load_exported(run / "export")
        assert type(model).__name__ == "TinyCNN" and model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("strategy", ["fsdp", "deepspeed_stage_3"])
def test_a_pretrained_encoder_fine_tunes_sharded_on_two_processes(cli, tmp_path: Path, strategy: str) -> None:
    """A Transformers encoder under FSDP2 (sharded by its own blocks, BertLayer) and ZeRO-3, exported whole."""
    from helpers import NEGATIVE_WORDS, NEUTRAL_WORDS, POSITIVE_WORDS, sentiment_csvs
    from pretrained_models import tiny_bert

    bert = tiny_bert(tmp_path / "bert", [*POSITIVE_WORDS, *NEGATIVE_WORDS, *NEUTRAL_WORDS])
    reviews = sentiment_csvs(tmp_path / "reviews", train=160, test=40)
    recipe = tmp_path / "bert.yaml"
    data = (f"{{path: {reviews}, text_column: review, label_column: sentiment, max_length: 16, "
            "global_batch_size: 16, micro_batch_size: 8}")  # fmt: skip
    recipe.write_text(f"# trainer fit bert.yaml\ntask: text_classification\nmodel: {{family: huggingface, "
                      f"pretrained: {bert}}}\ndata: {data}\ntrainer: {{max_steps: 4}}\n")  # fmt: skip
    run = tmp_path / "run"
    result = cli("fit", str(recipe), "trainer.devices=2", f"trainer.strategy={strategy}", "trainer.accelerator=cpu",
                 f"run_dir={run}", "trainer.enable_progress_bar=false", env=ENV)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads(result.stdout)["world_size"] == 2
    exported = cli("export", str(run))
    assert exported.returncode == 0, exported.stderr[-3000:]
    from transformers import AutoModelForSequenceClassification

    assert AutoModelForSequenceClassification.from_pretrained(str(run / "export")).config.id2label[1] == "positive"


def test_a_run_resumes_under_another_strategy_only_where_a_converter_carries_it(cli, main_cli, tmp_path: Path) -> None:
    """The strategy-change matrix. ZeRO-1/2, with or without offload, convert among themselves through
    DeepSpeed's universal format; plain (one process, DDP) and DeepSpeed checkpoints, or ZeRO-3 and the
    other stages, do not: one line naming the strategy the run was trained with, the run untouched."""
    from helpers import FAST, one_error_line, snapshot

    plain, zero2 = tmp_path / "plain", tmp_path / "zero2"
    for run_dir, strategy in ((plain, "auto"), (zero2, "deepspeed_stage_2")):
        done = cli("fit", "digits_cnn", f"trainer.strategy={strategy}", "trainer.max_steps=4", f"run_dir={run_dir}",
                   *FAST, env=ENV)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
    refused = {plain: ["deepspeed_stage_1", "deepspeed_stage_3"], zero2: ["ddp", "deepspeed_stage_3_offload"]}
    for run_dir, strategies in refused.items():
        trained = "auto (one process) or ddp" if run_dir == plain else "deepspeed_stage_2"
        before = snapshot(run_dir)
        for strategy in strategies:
            line = one_error_line(main_cli("fit", "digits_cnn", f"resume={run_dir}", f"trainer.strategy={strategy}",
                                           "trainer.max_steps=8", *FAST))  # fmt: skip
            assert f"the run was trained with trainer.strategy={trained}" in line, (run_dir.name, strategy)
            assert f"cannot be resumed under {strategy}" in line and f"init_from='{run_dir}'" in line
        assert snapshot(run_dir) == before
    # Converted: ZeRO-2's shards into ZeRO-2 with the optimizer offloaded to the CPU.
    resumed = cli("fit", "digits_cnn", f"resume={zero2}", "trainer.strategy=deepspeed_stage_2_offload",
                  "trainer.max_steps=8", *FAST, env=ENV)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(resumed.stdout)["global_step"] == 8
    assert "Since DeepSpeed handles gradient clipping" not in resumed.stderr  # it does: nothing to act on
