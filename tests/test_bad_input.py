"""Bad input: one line naming the problem and the fix, exit status 2, no traceback, nothing written.

The checks that answer before torch is imported are unit tests (tests/unit/test_cli_errors.py); these
need torch or a run, and a few go end to end through the console script, as a user's shell does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import FAST, fit, one_error_line

from trainer.errors import UserError


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["fit", "mnist_cnn", "model.chanels=[8]"], "did you mean 'model.channels'"),  # before torch
        (["fit", "mnist_cnn", "data.path=/no/such/folder"], "data.path '/no/such/folder' does not exist"),  # after
        (["frobnicate"], "invalid choice"),  # argparse's own
    ],
)
def test_bad_input_through_the_console_script_is_one_line_and_exit_2(cli, tmp_path, words, expected) -> None:
    assert expected in one_error_line(cli(*words))
    assert not (tmp_path / "runs").exists()


def test_compile_without_a_compiler_is_a_clear_error(cli, tmp_path: Path) -> None:
    """torch.compile would fail at the first step, in a traceback; the check comes before anything is written.
    A process of its own: torch reads CXX once, when it is imported."""
    run_dir = tmp_path / "run"
    result = cli("fit", "digits_cnn", "performance.compile=true", f"run_dir={run_dir}", env={"CXX": "/no/such/g++"})
    assert "needs a C++ compiler" in one_error_line(result)
    assert not run_dir.exists()


def test_a_corrupt_checkpoint_is_a_clear_error(main_cli, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    fit("digits_cnn", "trainer.max_steps=2", f"run_dir={run_dir}", *FAST)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:5000])  # truncated, as by a full disk
    line = one_error_line(main_cli("test", "digits_cnn", f"ckpt={ckpt}"))
    assert "cannot be loaded" in line
    line = one_error_line(main_cli("fit", "digits_cnn", f"resume={run_dir}"))
    assert "cannot be loaded" in line


def test_an_existing_run_directory_is_never_overwritten(main_cli, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    fit("digits_cnn", "trainer.max_steps=2", f"run_dir={run_dir}", *FAST)
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    line = one_error_line(main_cli("fit", "digits_cnn", "trainer.max_steps=2", f"run_dir={run_dir}"))
    assert "already holds a run" in line and "overwrite=true" in line
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before
    summary = fit("digits_cnn", "trainer.max_steps=3", f"run_dir={run_dir}", "overwrite=true", *FAST)
    assert summary["global_step"] == 3


def test_a_missing_data_column_fails_before_the_run_directory_exists(tmp_path: Path, small_imdb: Path) -> None:
    with pytest.raises(UserError, match="no column 'review'"):
        fit("imdb_lstm", f"data.path={small_imdb}", "data.text_column=review", f"run_dir={tmp_path / 'run'}")
    assert not (tmp_path / "run").exists()


def test_config_answers_fast_without_importing_torch(cli) -> None:
    result = cli("config", "mnist_cnn", "optim.lr=3e-4")
    assert result.returncode == 0
    assert "lr: 0.0003" in result.stdout
    import subprocess
    import sys

    probe = "import sys; from trainer.cli import main; main(['config', 'mnist_cnn']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False")


def test_a_reader_that_goes_away_is_no_traceback() -> None:
    """`trainer recipes | head -1`: the pipe closes before the CLI writes; exit 141 (SIGPIPE) and no traceback."""
    process = subprocess.Popen(
        [sys.executable, "-m", "trainer", "recipes"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    process.stdout.close()  # before the CLI has even imported: its first write meets a closed pipe
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 141, stderr
    assert stderr == ""
