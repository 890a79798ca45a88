"""The code stays ruff-clean (lint and format) and the shell scripts parse, checked where CI runs: in the suite."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, run_main


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff(command: list[str]) -> None:
    ruff = shutil.which("ruff")
    assert ruff is not None, "ruff is missing: install the test extra (pip install -e '.[test]')"
    result = subprocess.run([ruff, *command, "."], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shell_scripts_and_a_rendered_sbatch_script_parse(tmp_path: Path) -> None:
    rendered = run_main("slurm", "shakespeare_gpt", "--nodes", "2", "--gpus-per-node", "8", "--dry-run")
    assert rendered.returncode == 0, rendered.stderr
    (tmp_path / "job.sbatch").write_text(rendered.stdout)
    scripts = [tmp_path / "job.sbatch", REPO / "slurm" / "train.sbatch", *sorted((REPO / "launch").glob("*.sh"))]
    for script in scripts:
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script}: {result.stderr}"
