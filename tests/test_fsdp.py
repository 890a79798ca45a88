"""FSDP2 (`trainer.strategy=fsdp`) on 2 CPU ranks over gloo, through the real CLI: the same curve as DDP, exact
resume, resume on another world size through DCP's resharding, kill -9 during a sharded save, checksums of every
shard, and the checkpoint's way out (test, generate, export to every format, predict).

The runs are shared: one module fixture trains them once (about 90 s) and each test checks one promise.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from helpers import metric_series
from tiny_gpt import ENV, RESUMED_RUN, TINY_GPT, fit_until_interrupted

from trainer.lifecycle.checkpoints import read_training_checkpoint
from trainer.lifecycle.run_dir import newest_complete_checkpoint

pytestmark = pytest.mark.distributed
FSDP = ("trainer.strategy=fsdp", *RESUMED_RUN)
DDP = ("trainer.strategy=ddp", *RESUMED_RUN)
# Another world size reshards the same state exactly (DCP); what may differ is the order of float sums over 1 or
# 2 ranks. Measured here: the uninterrupted run's final validation loss to the summary's 6 decimals; stated: 1e-4.
RESHARDED_REL = 1e-4


class _Runs:
    """What a doctored pickle holds: unpickled, it runs a shell command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return (os.system, (self.command,))


@dataclass(frozen=True)
class FSDPRuns:
    straight: dict  # 40 steps on 2 ranks, uninterrupted
    ddp: dict  # the same run under DDP
    same_world: dict  # SIGTERM at its first step on 2 ranks, resumed on 2
    resharded: dict  # the same checkpoint resumed on 1 rank (SIGTERM), then killed -9 during a save on 2, resumed
    resharded_dir: Path
    killed_at: Path  # the checkpoint the kill -9 left as the newest


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a process that ended meanwhile
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_9_during_a_save(run_dir: Path, *words: str) -> Path:
    """Resume with a checkpoint at every step and kill -9 the launcher and every worker while a sharded last.ckpt
    is being written (its `.partial` folder holds a shard); return the newest complete checkpoint left."""
    command = [sys.executable, "-m", "trainer", "fit", "shakespeare_gpt", f"resume={run_dir}", *words,
               "checkpoint.every_n_train_steps=1"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **ENV})
    partial = run_dir / "checkpoints" / "last.ckpt.partial"
    deadline = time.monotonic() + 180
    while process.poll() is None and time.monotonic() < deadline:
        if partial.is_dir() and any(partial.glob("*.distcp")):
            break
        time.sleep(0.005)
    assert process.poll() is None, "the run ended before a save could be interrupted"
    for pid in [*_descendants(process.pid), process.pid]:
        os.kill(pid, signal.SIGKILL)
    process.wait(timeout=60)
    newest = newest_complete_checkpoint(run_dir)
    assert newest is not None
    return newest


def _resume(run_dir: Path, *words: str) -> dict:
    result = run_cli("fit", "shakespeare_gpt", f"resume={run_dir}", *words, env=ENV)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def fsdp_runs(straight_runs, small_shakespeare: Path, tmp_path_factory: pytest.TempPathFactory) -> FSDPRuns:
    straight = straight_runs(small_shakespeare, *FSDP, "trainer.devices=2")
    ddp = straight_runs(small_shakespeare, *DDP, "trainer.devices=2")

    folder = tmp_path_factory.mktemp("fsdp")
    same, other = folder / "same", folder / "other"
    assert 0 < fit_until_interrupted(same, *FSDP, "trainer.devices=2", data=small_shakespeare) < 40
    shutil.copytree(same, other)
    same_world = _resume(same, "trainer.devices=2")

    fit_until_interrupted(other, f"resume={other}", "trainer.devices=1")  # 2 -> 1 rank, one step
    killed_at = _kill_9_during_a_save(other, "trainer.devices=2")  # 1 -> 2 ranks
    read_training_checkpoint(killed_at)  # whole: it verifies and consolidates
    resharded = _resume(other, "trainer.devices=2")
    return FSDPRuns(straight, ddp, same_world, resharded, other, killed_at)


def test_fsdp_follows_ddps_loss_curve(fsdp_runs: FSDPRuns) -> None:
    """Same seed, data order, accumulation (2 micro batches) and clipping: FSDP2's sharded step is DDP's step.
    Tolerance: 1e-4 relative on every validation and every step's training loss (measured: about 1e-6)."""
    curves = {}
    for name, summary in (("fsdp", fsdp_runs.straight), ("ddp", fsdp_runs.ddp)):
        run_dir = Path(summary["run_dir"])
        curves[name] = {key: torch.tensor(metric_series(run_dir, key)) for key in ("val/loss", "train/loss")}
    assert len(curves["ddp"]["val/loss"]) == 4 and len(curves["ddp"]["train/loss"]) == 40
    assert curves["ddp"]["val/loss"][-1] < curves["ddp"]["val/loss"][0] - 0.1  # it did learn
    for key in ("val/loss", "train/loss"):
        torch.testing.assert_close(curves["fsdp"][key], curves["ddp"][key], rtol=1e-4, atol=0)


def test_fsdp_checkpoint_is_a_shard_per_rank_each_file_checksummed(fsdp_runs: FSDPRuns, main_cli, tmp_path) -> None:
    from torch.distributed.checkpoint import FileSystemReader

    last = Path(fsdp_runs.straight["run_dir"]) / "checkpoints" / "last.ckpt"
    files = {p.name for p in last.iterdir()}
    assert files == {"__0_0.distcp", "__1_0.distcp", ".metadata", "meta.pt", "checksums.sha256"}
    recorded = {line.split("  ", 1)[1] for line in (last / "checksums.sha256").read_text().splitlines()}
    assert recorded == files - {"checksums.sha256"}
    # Every weight is a DTensor sharded over both ranks: two chunks in DCP's index, each half the rows.
    index = FileSystemReader(last).read_metadata().state_dict_metadata
    weights = {k: v for k, v in index.items() if k.startswith("state_dict.model.")}
    assert weights and all(len(meta.chunks) == 2 for meta in weights.values() if meta.size[0] >= 2)

    # A rotted shard is refused in one line, naming the checkpoint and the file.
    copy = tmp_path / "run"
    shutil.copytree(Path(fsdp_runs.straight["run_dir"]), copy)
    shard = copy / "checkpoints" / "last.ckpt" / "__1_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    refused = main_cli("export", str(copy))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "__1_0.distcp no longer matches the checksum" in refused.stderr.strip().splitlines()[-1]

    # Without a record, a doctored index (DCP reads it with pickle) is refused before it is unpickled; a shard cut
    # short is named.
    last = copy / "checkpoints" / "last.ckpt"
    (last / "checksums.sha256").unlink()
    shard.write_bytes(bytes(data[:100]))
    cut = main_cli("export", str(copy))
    assert cut.returncode == 2 and "shard __1_0.distcp is cut short" in cut.stderr.strip().splitlines()[-1]
    marker = tmp_path / "ran"
    (last / ".metadata").write_bytes(pickle.dumps(_Runs(f"touch {marker}")))
    unsafe = main_cli("export", str(copy))
    assert unsafe.returncode == 2 and "Traceback" not in unsafe.stderr, unsafe.stderr[-2000:]
    assert "is not safe to load: its .metadata names posix.system" in unsafe.stderr.strip().splitlines()[-1]
    assert not marker.exists()


def test_fsdp_resumes_exactly_on_the_same_world_size(fsdp_runs: FSDPRuns) -> None:
    """Stopped by SIGTERM at its first step, resumed on 2 ranks: the uninterrupted run's loss (measured bitwise)."""
    resumed, straight = fsdp_runs.same_world, fsdp_runs.straight
    assert resumed["global_step"] == 40 and resumed["world_size"] == 2
    assert resumed["val"]["val/loss"] == pytest.approx(straight["val"]["val/loss"], rel=1e-6)


def test_fsdp_reshards_onto_another_world_size_and_survives_kill_9_during_a_save(fsdp_runs: FSDPRuns) -> None:
    """The 2-rank checkpoint resumed on 1 rank, its 1-rank checkpoint on 2 ranks, killed -9 while writing a sharded
    checkpoint and resumed from what the kill left: the uninterrupted run's loss within RESHARDED_REL."""
    resumed, straight = fsdp_runs.resharded, fsdp_runs.straight
    assert resumed["global_step"] == 40 and resumed["world_size"] == 2
    assert fsdp_runs.killed_at.name in ("last.ckpt", "last.ckpt.previous")
    assert not (fsdp_runs.resharded_dir / "checkpoints" / "last.ckpt.partial").exists()  # the next save cleared it
    assert resumed["val"]["val/loss"] == pytest.approx(straight["val"]["val/loss"], rel=RESHARDED_REL)


def test_fsdp_checkpoint_tests_generates_exports_and_predicts(fsdp_runs: FSDPRuns, cli, main_cli) -> None:
    """Its shards consolidated into the plain model: `trainer test` gives the run's own final validation loss, and
    every export format predicts what the checkpoint itself predicts."""
    run_dir = Path(fsdp_runs.straight["run_dir"])
    last = run_dir / "checkpoints" / "last.ckpt"
    tested = cli("test", "shakespeare_gpt", f"ckpt={last}", env=ENV)  # on the run's 2 ranks
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert json.loads(tested.stdout)["val/loss"] == pytest.approx(fsdp_runs.straight["val"]["val/loss"], rel=1e-5)
    generated = main_cli("generate", "shakespeare_gpt", f"ckpt={last}", "prompt=ROMEO:", "max_new_tokens=8",
                         "generate.temperature=0")  # fmt: skip
    assert generated.returncode == 0, generated.stderr[-3000:]
    greedy = ("ROMEO:", "--temperature", "0", "--max-new-tokens", "8")
    expected = main_cli("predict", str(run_dir), *greedy)
    assert expected.returncode == 0 and expected.stdout.startswith("ROMEO:"), expected.stderr[-3000:]
    assert generated.stdout.strip() == expected.stdout.strip()
    for fmt in ("safetensors", "onnx", "torchscript"):
        exported = main_cli("export", str(run_dir), f"format={fmt}")
        assert exported.returncode == 0, exported.stderr[-3000:]
        predicted = main_cli("predict", exported.stdout.strip(), *greedy)
        assert predicted.returncode == 0, predicted.stderr[-3000:]
        assert predicted.stdout == expected.stdout, fmt


def test_a_strategy_change_to_or_from_fsdp_converts_or_is_refused(
    fsdp_runs: FSDPRuns, main_cli, small_shakespeare: Path, tmp_path: Path
) -> None:
    """A plain checkpoint (one process, or DDP) resumes under FSDP2, sharded as it is restored: the uninterrupted
    FSDP2 run's loss within RESHARDED_REL. An FSDP2 checkpoint resumes on one process or under DDP, consolidated
    first; under ZeRO it is refused before anything is written, naming FSDP2 on any number of processes."""
    plain_run = tmp_path / "plain"
    fit_until_interrupted(plain_run, *RESUMED_RUN, "trainer.devices=1", data=small_shakespeare)
    converted = _resume(plain_run, "trainer.strategy=fsdp", "trainer.devices=2")
    assert converted["global_step"] == 40 and converted["world_size"] == 2
    assert converted["val"]["val/loss"] == pytest.approx(fsdp_runs.straight["val"]["val/loss"], rel=RESHARDED_REL)
    assert (plain_run / "checkpoints" / "last.ckpt" / "meta.pt").is_file()  # it now writes FSDP2 checkpoints
    assert not (plain_run / "checkpoints" / "last.ckpt.sha256").exists()  # the file's record went with the file

    # An FSDP2 checkpoint resumed on one process (or DDP): consolidated once beside it, optimizer state included.
    fsdp_run = tmp_path / "fsdp"
    shutil.copytree(Path(fsdp_runs.straight["run_dir"]), fsdp_run)
    plain = main_cli("fit", "shakespeare_gpt", f"resume={fsdp_run}", "trainer.strategy=auto", "trainer.devices=1",
                     "trainer.max_steps=44")  # fmt: skip
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert json.loads(plain.stdout)["global_step"] == 44
    last = fsdp_run / "checkpoints" / "last.ckpt"
    assert last.is_file() and (fsdp_run / "checkpoints" / "last.ckpt.sha256").is_file()
    assert not (fsdp_run / "checkpoints" / "last.ckpt.plain").exists()  # gone once the run saved its own
    adam = torch.load(last, weights_only=True)["optimizer_states"][0]["state"]
    assert {int(state["step"]) for state in adam.values()} == {44}  # Adam went on from step 40, not from 0

    before = sorted((p.name, p.stat().st_mtime_ns) for p in Path(fsdp_runs.straight["run_dir"]).rglob("*"))
    refused = main_cli("fit", "shakespeare_gpt", f"resume={fsdp_runs.straight['run_dir']}",
                       "trainer.strategy=deepspeed_stage_2", "trainer.devices=1", "trainer.max_steps=44")  # fmt: skip
    line = refused.stderr.strip().splitlines()[-1]
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
    assert "trained with trainer.strategy=fsdp" in line and "fsdp on any number of processes" in line, line
    assert sorted((p.name, p.stat().st_mtime_ns) for p in Path(fsdp_runs.straight["run_dir"]).rglob("*")) == before


def test_a_block_class_the_model_lacks_is_one_line_before_anything_is_written(main_cli, small_shakespeare: Path,
                                                                              tmp_path: Path) -> None:  # fmt: skip
    result = main_cli("fit", "shakespeare_gpt", f"data.path={small_shakespeare}", *TINY_GPT, "trainer.strategy=fsdp",
                      "fsdp.block_class=[Block,BertLayer]", f"run_dir={tmp_path / 'run'}")  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "error: fsdp.block_class='BertLayer' is not a class of this model; its blocks are Block"
    )
    assert not (tmp_path / "run").exists()
