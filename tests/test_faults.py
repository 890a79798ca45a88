"""Faults and hostile input, through the real CLI: each is one line on stderr, its documented exit status,
no traceback, and no run directory, checkpoint or config created, changed or lost. Commands run in this
process through the CLI's entry point (`main_cli`), except where a real process is the point: signals,
a second process, a kill.

Grouped as the classes they stand for: a resume that would damage its run, overwrite, unwritable places
and a full disk, nothing to train, settings that can never work, mismatched artefacts, corruption.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import run_main
from helpers import FAST, SELF_INTERRUPTING_MODULE, metric_series, one_error_line, snapshot

from trainer import api
from trainer.errors import UserError
from trainer.lifecycle.checkpoints import read_training_checkpoint

TINY_GPT = ("model.d_model=32", "model.n_heads=4", "model.n_layers=1", "data.block_size=32", *FAST)


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished digits_cnn run (6 steps, a best-k checkpoint beside last.ckpt). Tests copy it before changing it."""
    run_dir = tmp_path_factory.mktemp("digits") / "run"
    done = run_main("fit", "digits_cnn", "trainer.max_steps=6", f"run_dir={run_dir}", *FAST,
                    env={"TRAINER_CACHE": str(run_dir.parent / "cache")})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="session")
def gpt_run(tmp_path_factory: pytest.TempPathFactory, small_shakespeare: Path) -> Path:
    run_dir = tmp_path_factory.mktemp("gpt") / "run"
    words = ["fit", "shakespeare_gpt", f"data.path={small_shakespeare}", *TINY_GPT, "trainer.max_steps=4"]
    done = run_main(*words, f"run_dir={run_dir}", env={"TRAINER_CACHE": str(run_dir.parent / "cache")})
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copied"
    shutil.copytree(run_dir, copy)
    # The copy's config names its own directory, as a run directory moved by a user would not: both work.
    return copy


# ----------------------------------------------------------------------------- a resume never damages its run


def test_a_resume_with_another_model_shape_changes_nothing_and_the_run_still_resumes(
    main_cli, digits_run: Path, tmp_path: Path
) -> None:
    run_dir = _copy(digits_run, tmp_path)
    before = snapshot(run_dir)
    line = one_error_line(main_cli("fit", "digits_cnn", f"resume={run_dir}", "model.hidden_dim=64"))
    assert "hidden_dim=128" in line and "model.hidden_dim=64" in line
    assert snapshot(run_dir) == before  # config.yaml, checkpoints and metrics untouched
    resumed = main_cli("fit", "digits_cnn", f"resume={run_dir}", "trainer.max_steps=8", *FAST)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(resumed.stdout)["global_step"] == 8


def test_a_resume_under_another_recipe_is_refused(main_cli, digits_run: Path, tmp_path: Path) -> None:
    run_dir = _copy(digits_run, tmp_path)
    before = snapshot(run_dir)
    line = one_error_line(main_cli("fit", "shakespeare_gpt", f"resume={run_dir}"))
    assert "belongs to a run of recipe 'digits_cnn', not 'shakespeare_gpt'" in line
    assert f"trainer fit digits_cnn resume={run_dir}" in line
    assert snapshot(run_dir) == before


def test_a_run_in_use_is_not_resumed_by_a_second_process(digits_run: Path, tmp_path: Path) -> None:
    """A second `resume=` while the run still trains would make two writers of one checkpoint."""
    run_dir = _copy(digits_run, tmp_path)
    command = [sys.executable, "-m", "trainer", "fit", "digits_cnn", f"resume={run_dir}", "trainer.max_steps=100000",
               *FAST]  # fmt: skip
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_line(first, "trainer: run directory")  # it holds the run now
        second = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert "is in use by another trainer process" in one_error_line(second)
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=300)
    assert first.returncode == 128 + signal.SIGTERM


def _wait_for_line(process: subprocess.Popen, text: str) -> None:
    for line in process.stderr:
        if text in line:
            return
    raise AssertionError(f"{text!r} never came; exit status {process.wait()}")


def test_contradicting_run_words_are_refused(main_cli, digits_run: Path, tmp_path: Path) -> None:
    run_dir = _copy(digits_run, tmp_path)
    assert "drop one of them" in one_error_line(main_cli("fit", "digits_cnn", f"resume={run_dir}", "overwrite=true"))
    line = one_error_line(main_cli("fit", "digits_cnn", f"resume={run_dir}", f"run_dir={tmp_path / 'other'}"))
    assert "drop run_dir=" in line
    assert "ckpt= is for test and generate" in one_error_line(main_cli("fit", "digits_cnn", "ckpt=x.ckpt"))
    assert not (tmp_path / "other").exists()


# ----------------------------------------------------------------------------- overwrite


def test_overwrite_replaces_the_old_run_but_only_once_the_new_one_is_valid(
    main_cli, digits_run: Path, tmp_path
) -> None:
    run_dir = _copy(digits_run, tmp_path)
    old_checkpoints = {p.name for p in (run_dir / "checkpoints").iterdir()}
    before = snapshot(run_dir)
    # Invalid inputs: nothing of the old run is deleted.
    failed = main_cli("fit", "digits_cnn", f"run_dir={run_dir}", "overwrite=true", "data.path=/no/such/data")
    assert "does not exist" in one_error_line(failed)
    assert snapshot(run_dir) == before

    replaced = main_cli("fit", "digits_cnn", f"run_dir={run_dir}", "overwrite=true", "trainer.max_steps=3", *FAST)
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    assert len(metric_series(run_dir, "train/loss")) == 3  # the new run's rows alone
    new_checkpoints = {p.name for p in (run_dir / "checkpoints").iterdir()}
    assert "epoch0-step6.ckpt" in old_checkpoints and "epoch0-step6.ckpt" not in new_checkpoints


def test_overwrite_never_empties_a_folder_that_is_not_a_run(main_cli, tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "train.py").write_text("print('my code')\n")
    line = one_error_line(main_cli("fit", "digits_cnn", f"run_dir={folder}", "overwrite=true"))
    assert "is not a run directory" in line and "nothing was deleted" in line
    assert (folder / "train.py").read_text() == "print('my code')\n"


# ----------------------------------------------------------------------------- unwritable places, a full disk


def _cannot(reason: str) -> None:
    """Skip where the machine cannot do it; CI, which can (root), sets TRAINER_REQUIRE_PRIVILEGED to fail instead."""
    if os.environ.get("TRAINER_REQUIRE_PRIVILEGED"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def immutable_folder(tmp_path: Path):
    """A folder even root cannot write into (chattr +i), as a read-only mount would be."""
    folder = tmp_path / "immutable"
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        _cannot("needs root and chattr to make an immutable folder")
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        _cannot("this file system does not support immutable folders")
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.mark.parametrize("setting", ["run_dir", "data.cache_dir", "TRAINER_CACHE"])
def test_unwritable_places_are_one_line_before_any_work(main_cli, tmp_path: Path, immutable_folder, setting) -> None:
    target = immutable_folder / "inside"
    if setting == "TRAINER_CACHE":
        result = main_cli("fit", "digits_cnn", env={"TRAINER_CACHE": str(target)})
    else:
        result = main_cli("fit", "digits_cnn", f"{setting}={target}")
    assert f"{setting} '{target}' cannot be written" in one_error_line(result)
    afile = tmp_path / "afile"
    afile.write_text("")
    line = one_error_line(main_cli("fit", "digits_cnn", f"run_dir={afile / 'run'}"))
    assert "is a file, not a folder" in line
    assert not (tmp_path / "runs").exists()


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 1.5 MiB file system (tmpfs): room for one digits_cnn checkpoint and its run files, not for two."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        _cannot("needs root to mount a small file system")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        _cannot(f"cannot mount tmpfs here: {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_ends_the_run_with_one_line_and_keeps_the_last_good_checkpoint(main_cli, small_disk: Path) -> None:
    run_dir = small_disk / "run"
    # A checkpoint every step, best-k off: the second last.ckpt is written beside the first and cannot fit.
    result = main_cli("fit", "digits_cnn", "trainer.max_steps=50", "checkpoint.every_n_train_steps=1",
                 "checkpoint.save_top_k=0", f"run_dir={run_dir}", *FAST)  # fmt: skip
    assert result.returncode == 4, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: cannot write checkpoint") and "No space left on device" in line
    assert "last.ckpt.partial" in line and "is intact" in line
    assert read_training_checkpoint(run_dir / "checkpoints" / "last.ckpt").global_step >= 1
    assert not list(run_dir.rglob("*.partial"))


# ----------------------------------------------------------------------------- nothing to train


@pytest.fixture(scope="session")
def bad_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path_factory.mktemp("bad_data")
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    (folder / "image.parquet").write_bytes(png)  # a PNG renamed .parquet
    pq.write_table(pa.table({"text": pa.array([], pa.string()), "label": pa.array([], pa.int64())}),
                   folder / "no_rows.parquet")  # fmt: skip
    (folder / "empty.txt").write_text("")
    (folder / "short.txt").write_text("To be, or not to be.\n")
    (folder / "broken.json").write_text("{not json")
    texts = [f"review number {i}" for i in range(200)]
    pq.write_table(pa.table({"text": texts, "label": [1] * 200}), folder / "one_class.parquet")
    pq.write_table(pa.table({"text": texts, "label": [0.5, 1.5] * 100}), folder / "float_labels.parquet")
    return folder


@pytest.mark.parametrize(
    ("recipe", "data", "words", "expected"),
    [
        ("imdb_lstm", "image.parquet", [], "is not a parquet file"),
        ("imdb_lstm", "no_rows.parquet", [], "holds no rows"),
        ("shakespeare_gpt", "empty.txt", [], "is empty"),
        ("shakespeare_gpt", "short.txt", [], "block(s) of data.block_size + 1 tokens"),
        ("imdb_lstm", "broken.json", [], "cannot read the data at data.path"),
        ("imdb_lstm", "one_class.parquet", ["data.test_split=null"], "holds 1 class"),
        ("imdb_lstm", "float_labels.parquet", [], "not class labels; give integer or text labels"),
        ("imdb_lstm", "one_class.parquet", ["data.global_batch_size=512"], "fewer than one batch"),
    ],
)  # fmt: skip
def test_nothing_to_train_is_an_error_before_the_run_starts(
    main_cli, tmp_path, bad_data, recipe, data, words, expected
):
    result = main_cli("fit", recipe, f"data.path={bad_data / data}", *words, f"run_dir={tmp_path / 'run'}")
    assert expected in one_error_line(result)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- settings that can never work


@pytest.mark.parametrize("command", ["fit", "test", "generate"])
def test_config_errors_answer_before_torch_is_imported(command: str) -> None:
    recipe = "shakespeare_gpt" if command == "generate" else "digits_cnn"
    probe = (f"import sys; from trainer.cli import main; status = main([{command!r}, {recipe!r}, 'optim.lrr=1']); "
             "print(status, 'torch' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["2", "False"]


def test_deepspeed_typos_name_the_whole_path_and_the_closest_key_on_one_line(main_cli, tmp_path: Path) -> None:
    result = main_cli("fit", "shakespeare_gpt", "trainer.strategy=deepspeed_stage_2",
                      "deepspeed.config={zero_optimization: {offload_optimizer: {devise: cpu}}}")  # fmt: skip
    line = one_error_line(result)  # strictly one line: no DeepSpeed log lines around it
    assert "'zero_optimization.offload_optimizer.devise'" in line and "did you mean 'device'?" in line
    result = main_cli("fit", "shakespeare_gpt", "trainer.strategy=deepspeed_stage_2",
                      "deepspeed.config={optimizer: {typ: Adam}}")  # fmt: skip
    line = one_error_line(result)
    assert "'optimizer.typ'" in line and "did you mean 'type'?" in line


# ----------------------------------------------------------------------------- mismatched artefacts


def test_a_checkpoint_of_another_task_or_shape_is_refused_by_test_generate_and_export(
    main_cli, digits_run: Path, gpt_run: Path, small_shakespeare: Path, tmp_path: Path
) -> None:
    digits_ckpt = digits_run / "checkpoints" / "last.ckpt"
    gpt_ckpt = gpt_run / "checkpoints" / "last.ckpt"
    # A checkpoint inside a run brings the run's recipe: naming another is refused.
    line = one_error_line(main_cli("test", "shakespeare_gpt", f"ckpt={digits_ckpt}"))
    assert "belongs to a run of recipe 'digits_cnn'" in line
    # Outside its run directory, the checkpoint itself says what it is.
    loose = tmp_path / "loose.ckpt"
    shutil.copy(gpt_ckpt, loose)
    line = one_error_line(main_cli("test", "imdb_lstm", f"ckpt={loose}", f"data.path={small_shakespeare}"))
    assert "is a language_modeling model but recipe 'imdb_lstm' does text_classification" in line
    line = one_error_line(main_cli("generate", "shakespeare_lstm", f"ckpt={loose}"))
    assert "is a transformer model but recipe 'shakespeare_lstm' builds a lstm" in line
    line = one_error_line(
        main_cli("generate", "shakespeare_gpt", f"ckpt={loose}", "model.d_model=64", "model.n_heads=4")
    )
    assert "was trained with d_model=32 but this run asks model.d_model=64" in line
    # export checks the checkpoint against the run it exports.
    line = one_error_line(main_cli("export", str(digits_run), f"ckpt={gpt_ckpt}"))
    assert "is a language_modeling model" in line
    assert not (digits_run / "export").exists()


def test_generate_uses_the_block_size_the_checkpoint_was_trained_with(main_cli, gpt_run: Path) -> None:
    ckpt = gpt_run / "checkpoints" / "last.ckpt"
    # 64 new tokens > the 32-token context: the model sees the last 32, whatever data.block_size says.
    result = main_cli("generate", "shakespeare_gpt", f"ckpt={ckpt}", "data.block_size=256", "max_new_tokens=64")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(result.stdout.removesuffix("\n")) == len("ROMEO:") + 64


# ----------------------------------------------------------------------------- corruption


def test_rotted_bytes_are_reported_as_a_corrupt_checkpoint_naming_the_good_one(
    main_cli, digits_run: Path, tmp_path: Path
) -> None:
    run_dir = _copy(digits_run, tmp_path)
    last = run_dir / "checkpoints" / "last.ckpt"
    data = bytearray(last.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)  # bit rot inside a tensor: the file still loads as a zip
    last.write_bytes(bytes(data))
    good = run_dir / "checkpoints" / "epoch0-step6.ckpt"
    for words in (["fit", "digits_cnn", f"resume={run_dir}"], ["test", "digits_cnn", f"ckpt={last}"],
                  ["export", str(run_dir)]):  # fmt: skip
        line = one_error_line(main_cli(*words))
        assert line.startswith(f"error: corrupt checkpoint '{last}'") and f"'{good}'" in line, words
    # The named checkpoint continues the run.
    resumed = main_cli("fit", "digits_cnn", f"resume={run_dir}", f"ckpt={good}", "trainer.max_steps=8", *FAST)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(last, weights_only=True)["global_step"] == 8


def test_every_checkpoint_has_a_checksum_record(digits_run: Path) -> None:
    from trainer.lifecycle.checkpoints import file_digest, recorded_file_digests

    checkpoints = sorted((digits_run / "checkpoints").glob("*.ckpt"))
    assert len(checkpoints) == 2  # last.ckpt and the best one
    for path in checkpoints:
        assert recorded_file_digests(path) == [file_digest(path)], path


# ----------------------------------------------------------------------------- Ctrl-C


def _as_at_a_terminal() -> None:
    """Ctrl-C's default disposition in the child, whatever the suite inherited: a suite started in the
    background by a non-interactive shell (`cmd &`) inherits SIGINT ignored, and Python keeps it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_before_training_is_one_line_exit_130_and_leaves_no_empty_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "trainer", "fit", "digits_cnn", f"run_dir={run_dir}", *FAST]
    # During start-up (imports): nothing exists yet.
    early = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, preexec_fn=_as_at_a_terminal)
    time.sleep(0.5)  # inside the imports, which take seconds; a later signal is the next case
    early.send_signal(signal.SIGINT)
    _, stderr = early.communicate(timeout=300)
    # 130, or death by SIGINT itself, which a shell reports as 130 too (Python ends that way when the
    # interrupt is not fully handled before it exits); either way one line and no traceback.
    assert early.returncode in (130, -signal.SIGINT), stderr[-3000:]
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1].startswith("error: interrupted")
    assert not run_dir.exists()
    # The moment the run directory is made: a run that never trained leaves none behind; if training had
    # begun, Ctrl-C saved a checkpoint instead. Never an empty run directory.
    late = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, preexec_fn=_as_at_a_terminal)
    _wait_for_line(late, "trainer: run directory")
    late.send_signal(signal.SIGINT)
    _, stderr = late.communicate(timeout=300)
    assert late.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    assert not run_dir.exists() or (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_ctrl_c_inside_an_import_ends_the_process_even_where_a_library_swallows_it(tmp_path: Path) -> None:
    """The process-wide guard `python -m trainer` installs first: outside an import Ctrl-C raises as usual;
    inside one it ends the process at once, before a library's bare `except` can carry on half-made."""
    (tmp_path / "interrupts_its_import.py").write_text(SELF_INTERRUPTING_MODULE)
    script = (
        "import signal\n"
        "from trainer.cluster.signals import install_ctrl_c_guard\n"
        "install_ctrl_c_guard()\n"
        "try:\n"
        "    signal.raise_signal(signal.SIGINT)\n"
        "except KeyboardInterrupt:\n"
        "    print('raised outside an import', flush=True)\n"
        "import interrupts_its_import\n"
        "print('carried on after the import', flush=True)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        preexec_fn=_as_at_a_terminal,
    )  # fmt: skip
    assert result.returncode == 130, result.stderr[-3000:]
    assert result.stdout == "raised outside an import\n"
    assert result.stderr == "error: interrupted (Ctrl-C); nothing was saved\n"


# ----------------------------------------------------------------------------- undone unless training started


class _FailsAsFitBegins(L.Callback):
    """Lightning calls `setup` inside `fit`, after the run wrote its files and before training: a late check."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        raise UserError("a check as fit begins failed")


@pytest.mark.parametrize("kind", ["new", "overwrite", "resume"])
def test_a_failure_before_training_leaves_the_run_directory_as_it_was(digits_run: Path, tmp_path: Path, kind) -> None:
    run_dir = tmp_path / "run"
    if kind == "new":
        words = [f"run_dir={run_dir}"]
    else:
        shutil.copytree(digits_run, run_dir)
        words = (
            [f"run_dir={run_dir}", "overwrite=true"] if kind == "overwrite" else [f"resume={run_dir}", "optim.lr=0.9"]
        )
    if kind == "resume":
        words.append("trainer.max_steps=9")  # the finished 6-step run has steps left to train
    before = snapshot(run_dir) if run_dir.exists() else None
    with pytest.raises(UserError, match="a check as fit begins failed"):
        api.fit(api.resolve_fit_config("digits_cnn", [*FAST, *words]), callbacks=[_FailsAsFitBegins()])
    if kind == "new":
        assert not run_dir.exists()
    else:
        assert snapshot(run_dir) == before  # the old run back in place, config.yaml's old learning rate included


def test_overwrite_refuses_a_folder_that_holds_more_than_a_run(main_cli, digits_run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "project"
    shutil.copytree(digits_run, folder)
    (folder / ".git").mkdir()
    line = one_error_line(main_cli("fit", "digits_cnn", f"run_dir={folder}", "overwrite=true"))
    assert "holds '.git', which no run writes" in line and (folder / ".git").is_dir()


# A model whose run fails late in set-up, once another run in the same tree has started training.
FAILS_ONCE_ANOTHER_RUN_TRAINS = """
import glob, time
from torch import nn

class FailsOnceAnotherRunTrains(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        deadline = time.monotonic() + 240
        while not glob.glob("runs/digits_cnn/*/metrics.csv") and time.monotonic() < deadline:
            time.sleep(0.1)
        raise ValueError("this model never builds")
"""


def test_a_run_failing_before_training_leaves_the_folders_another_run_trains_in(tmp_path: Path) -> None:
    """Two real processes in a fresh tree: the failing run makes `runs/digits_cnn/`, the other starts
    training in it, then the first fails; its roll-back removes its own run directory and nothing else."""
    (tmp_path / "late_failure.py").write_text(FAILS_ONCE_ANOTHER_RUN_TRAINS)

    def start(*words: str) -> subprocess.Popen:
        command = [sys.executable, "-m", "trainer", "fit", "digits_cnn", *FAST, *words]
        return subprocess.Popen(command, cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    failing = start("model.family=custom", "model.class_path=late_failure:FailsOnceAnotherRunTrains")
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("runs/digits_cnn/*")) and failing.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    training = start("trainer.max_steps=12")
    _, failing_stderr = failing.communicate(timeout=300)
    _, training_stderr = training.communicate(timeout=300)
    assert "this model never builds" in one_error_line_of(failing, failing_stderr)
    assert training.returncode == 0, training_stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / "digits_cnn").iterdir()  # the failed run's directory is gone, this one kept
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == 12


def one_error_line_of(process: subprocess.Popen, stderr: str) -> str:
    return one_error_line(subprocess.CompletedProcess(process.args, process.returncode, "", stderr))


# ----------------------------------------------------------------------------- more hostile input


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["resume="], "has no value"),
        (["=5"], "has no key"),
        (["trainer.val_check_interval=2.5"], "invalid value for 'trainer.val_check_interval'"),
        (["trainer.val_check_interval=1000"], "more than the 41 training batches"),
        (["trainer.limit_train_batches=1e-9"], "leaves no training batch"),
        (["trainer.precision=16-true", "trainer.accelerator=cpu"], "needs a GPU"),
        (["trainer.strategy=deepspeed_stage_1", "trainer.gradient_clip_algorithm=value"], "clips gradients by norm"),
        (["optim.fused=true", "trainer.precision=16-mixed", "trainer.gradient_clip_val=1"], "cannot clip gradients"),
    ],
)
def test_more_settings_that_can_never_work(main_cli, tmp_path: Path, words: list[str], expected: str) -> None:
    assert expected in one_error_line(main_cli("fit", "digits_cnn", *words, f"run_dir={tmp_path / 'run'}"))
    assert not (tmp_path / "run").exists()


def test_a_broken_launcher_environment_is_one_line(main_cli) -> None:
    assert "is not a number" in one_error_line(main_cli("fit", "digits_cnn", env={"SLURM_RESTART_COUNT": "abc"}))
    assert "start the workers with torchrun" in one_error_line(main_cli("fit", "digits_cnn", env={"RANK": "0"}))


def test_a_fifo_where_a_command_reads_a_file_is_named_and_never_opened(main_cli, digits_run: Path, tmp_path) -> None:
    """Each of these blocked forever, or said "does not exist"; tests/unit has the recipe, export and report cases."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    images = tmp_path / "photos"
    images.mkdir()
    os.mkfifo(images / "b.png")
    data = tmp_path / "texts"
    data.mkdir()
    (data / "train.csv").write_text("text,label\ngood,1\n")
    os.mkfifo(data / "test.csv")
    cases = [
        (["predict", str(digits_run), str(images)], f"input '{images / 'b.png'}' is a FIFO"),
        (["test", "digits_cnn", f"ckpt={fifo}"], f"checkpoint '{fifo}' is a FIFO"),
        (["fit", "digits_cnn", f"data.path={fifo}"], f"data.path '{fifo}' is a FIFO"),
        (["fit", "imdb_lstm", f"data.path={data}"], f"data file '{data / 'test.csv'}' is a FIFO"),
        (["fit", "digits_cnn", f"init_from={fifo}"], "init_from"),
    ]
    for words, expected in cases:
        assert expected in one_error_line(main_cli(*words, *([] if words[0] == "predict" else FAST))), words


def test_damaged_records_and_handmade_checkpoints_are_one_line(main_cli, digits_run: Path, tmp_path: Path) -> None:
    run_dir = _copy(digits_run, tmp_path)
    last = run_dir / "checkpoints" / "last.ckpt"
    (run_dir / "checkpoints" / "last.ckpt.sha256").write_bytes(b"\xff\xfe not a record")
    for words in (["fit", "digits_cnn", f"resume={run_dir}"], ["test", "digits_cnn", f"ckpt={last}"],
                  ["export", str(run_dir)]):  # fmt: skip
        assert "corrupt checksum record" in one_error_line(main_cli(*words)), words
    handmade = tmp_path / "handmade.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": [1, 2]}, handmade)
    assert "was not written by `trainer fit`" in one_error_line(main_cli("test", "digits_cnn", f"ckpt={handmade}"))


def test_export_over_a_file_is_one_line_and_a_new_export_replaces_the_old_whole(main_cli, digits_run, tmp_path) -> None:
    run_dir = _copy(digits_run, tmp_path)
    (run_dir / "export").write_text("not a folder")
    assert "is a file, not an export folder" in one_error_line(main_cli("export", str(run_dir)))
    (run_dir / "export").unlink()
    for _ in range(2):
        result = main_cli("export", str(run_dir))
        assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith("export")) == ["export"]
    modes = {p.name: p.stat().st_mode & 0o777 for p in (run_dir / "export").iterdir()}
    assert modes["model.safetensors"] == modes["config.yaml"], modes  # readable alike, not safetensors' 0600


@pytest.fixture(scope="session")
def odd_labels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folders of text-classification data, each odd in one way (`unseen`: a test label training never saw)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("odd_labels")
    texts = [f"review {i} {'good' if i % 2 else 'bad'}" for i in range(200)]
    cases = {
        "unseen": {"train": ([i % 2 for i in range(200)], texts), "test": ([0, 1, 5, 1] * 50, texts)},
        "null_text": {"train": ([0, 1] * 100, [None, *texts[1:]])},
        "numbers": {"train": ([0, 1] * 100, list(range(200)))},
    }
    for case, splits in cases.items():
        (root / case).mkdir()
        for split, (labels, column) in splits.items():
            pq.write_table(pa.table({"text": column, "label": labels}), root / case / f"{split}.parquet")
    return root


def test_labels_and_texts_are_checked_in_every_split(main_cli, odd_labels: Path, tmp_path: Path) -> None:
    small = ("data.tokenizer.vocab_size=300", "data.max_length=16", "data.global_batch_size=16", "trainer.max_steps=2")
    # A test label training never saw still gets an output: the run completes and evaluates it.
    result = main_cli(
        "fit", "imdb_lstm", f"data.path={odd_labels / 'unseen'}", *small, f"run_dir={tmp_path / 'ok'}", *FAST
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for case, expected in (("null_text", "empty (null) cells"), ("numbers", "not text")):
        result = main_cli("fit", "imdb_lstm", f"data.path={odd_labels / case}", *small, f"run_dir={tmp_path / case}")
        assert expected in one_error_line(result), case
        assert not (tmp_path / case).exists()


def test_a_damaged_cache_is_rebuilt_and_a_damaged_run_tokenizer_is_one_line(
    main_cli, gpt_run: Path, small_imdb: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    words = ("fit", "imdb_lstm", "data.tokenizer.vocab_size=300", "data.max_length=16", "data.global_batch_size=16",
             "trainer.max_steps=1", f"data.cache_dir={cache}", *FAST)  # fmt: skip
    data = (f"data.path={small_imdb}",)
    first = main_cli(*words, *data, f"run_dir={tmp_path / 'a'}")
    assert first.returncode == 0, first.stderr[-3000:]
    for path in cache.rglob("*"):  # every cache entry cut short, as by a crash or a full disk
        if path.is_file() and path.suffix in (".json", ".arrow"):
            path.write_bytes(path.read_bytes()[:100])
    again = main_cli(*words, *data, f"run_dir={tmp_path / 'b'}")
    assert again.returncode == 0, again.stderr[-3000:]
    shutil.rmtree(cache / "tokenizers")
    (cache / "tokenizers").write_text("")
    assert "is a file, not a folder" in one_error_line(main_cli(*words, *data, f"run_dir={tmp_path / 'c'}"))
    # The run's own tokenizer has no copy to rebuild from.
    run_dir = _copy(gpt_run, tmp_path)
    (run_dir / "tokenizer.json").write_text("{broken")
    line = one_error_line(main_cli("generate", "shakespeare_gpt", f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}"))
    assert "cannot be read" in line


def test_generate_greedy_tiny_temperatures_and_unseen_characters(main_cli, gpt_run: Path) -> None:
    ckpt = f"ckpt={gpt_run / 'checkpoints' / 'last.ckpt'}"
    greedy = [
        main_cli("generate", "shakespeare_gpt", ckpt, "temperature=0", "max_new_tokens=8", f"seed={s}") for s in (1, 2)
    ]
    assert greedy[0].returncode == 0 and greedy[0].stdout == greedy[1].stdout  # argmax: no randomness
    tiny = main_cli("generate", "shakespeare_gpt", ckpt, "temperature=1e-300", "max_new_tokens=8")
    assert tiny.returncode == 0 and tiny.stdout == greedy[0].stdout, tiny.stderr[-2000:]
    unseen = main_cli("generate", "shakespeare_gpt", ckpt, "prompt=ROMEO€:", "max_new_tokens=2")
    assert unseen.returncode == 0 and "never seen in training: '€'" in unseen.stderr
    assert "holds nothing the model has seen" in one_error_line(
        main_cli("generate", "shakespeare_gpt", ckpt, "prompt=€€")
    )


def test_a_divergence_before_the_first_checkpoint_says_so(main_cli, tmp_path: Path) -> None:
    result = main_cli("fit", "digits_cnn", "optim.name=sgd", "optim.lr=1e12", "scheduler.name=none",
                 "model.batch_norm=false", "trainer.max_steps=50", f"run_dir={tmp_path / 'run'}", *FAST)  # fmt: skip
    assert result.returncode == 3, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].endswith("no checkpoint was written before it")


def test_a_run_killed_before_its_first_last_ckpt_resumes_from_its_best_checkpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "trainer", "fit", "digits_cnn", "trainer.max_steps=100000", f"run_dir={run_dir}",
               *FAST]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    best = run_dir / "checkpoints" / "epoch0-step41.ckpt"
    while not best.with_name(best.name + ".sha256").is_file():  # the epoch-0 validation's checkpoint, sealed
        assert process.poll() is None, "the run ended before its first best checkpoint"
        time.sleep(0.05)
    process.kill()  # kill -9: no last.ckpt was ever written
    process.wait()
    assert not (run_dir / "checkpoints" / "last.ckpt").exists()
    resumed = subprocess.run([sys.executable, "-m", "trainer", "fit", "digits_cnn", f"resume={run_dir}",
                              "trainer.max_steps=44"], capture_output=True, text=True)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(resumed.stdout)["global_step"] == 44


def test_a_resume_that_would_train_nothing_says_which_limit_ends_it(main_cli, digits_run: Path, tmp_path: Path) -> None:
    run_dir = _copy(digits_run, tmp_path)  # 6 steps, max_steps=6
    before = snapshot(run_dir)
    line = one_error_line(main_cli("fit", "digits_cnn", f"resume={run_dir}"))
    assert "already at step 6" in line and "trainer.max_steps=6, trainer.max_epochs=12" in line
    assert "trainer.max_steps=4" in one_error_line(
        main_cli("fit", "digits_cnn", f"resume={run_dir}", "trainer.max_steps=4")
    )
    assert snapshot(run_dir) == before


def test_a_folder_with_files_but_no_run_is_not_offered_resume_or_overwrite(main_cli, tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "todo.txt").write_text("x")
    line = one_error_line(main_cli("fit", "digits_cnn", f"run_dir={folder}"))
    assert "holds files but no run" in line and "overwrite" not in line


def test_a_missing_optional_package_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from trainer.config import load_config
    from trainer.extras import check_extras

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(UserError, match=r"logger=wandb needs the wandb package.*pip install -e '\.\[wandb\]'"):
        check_extras(load_config("digits_cnn", ["logger=wandb"]), "fit")
    check_extras(load_config("digits_cnn", ["logger=tensorboard"]), "fit")  # present: no error
