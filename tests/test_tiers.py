"""The suite's budget stays visible: every tier has its per-test timeout, and the unit tier stays fast
because the guard (tests/tiers.py) fails a unit test that starts a process or imports Lightning."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO
from tiers import STRICT_GUARD, TIER_TIMEOUTS, TIERS


def test_every_tier_has_a_timeout_and_the_unit_tier_the_tightest() -> None:
    assert set(TIER_TIMEOUTS) == {"unit", "integration", "distributed", "cluster", "slow"}
    assert TIER_TIMEOUTS["unit"] == min(TIER_TIMEOUTS.values()) <= 60


def test_the_unit_tier_starts_no_process_and_imports_no_lightning() -> None:
    """In a fresh interpreter, where Lightning is not yet imported, so that the guard checks every unit test
    (in the full run, other tiers' modules have imported it by then)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/unit", "-q", "-p", "no:cacheprovider", "--durations=0"],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, STRICT_GUARD: "1"}, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-5000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]


GUARDED = """
import subprocess, sys
import pytest

@pytest.fixture(scope="module")
def made_by_a_process():
    return subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True).stdout

def test_uses_a_fixture_that_starts_a_process(made_by_a_process):
    pass

def test_starts_a_process():
    subprocess.run([sys.executable, "-c", "pass"], check=True)

def test_starts_a_spawned_worker():
    import multiprocessing

    worker = multiprocessing.get_context("spawn").Process(target=print)
    worker.start()
    worker.join()

def test_imports_lightning():
    import lightning_fabric

def test_stays_in_process():
    assert sum(range(4)) == 6
"""


@pytest.fixture
def with_tiers(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytest run of its own (a fresh interpreter) with the tiers plugin and nothing else of this suite."""
    monkeypatch.setenv("PYTHONPATH", str(REPO / "tests"))
    pytester.makeconftest('pytest_plugins = ["tiers"]')
    return pytester


def test_the_guard_fails_a_unit_test_that_starts_a_process_or_imports_lightning(with_tiers: pytest.Pytester) -> None:
    with_tiers.mkdir("unit").joinpath("test_guarded.py").write_text(GUARDED)
    result = with_tiers.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    result.assert_outcomes(passed=1, failed=3, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_uses_a_fixture_that_starts_a_process*",
            "E*Failed: a unit test started a process (subprocess.Popen*'print(1)'*",
            "*_ test_starts_a_process _*",
            "E*Failed: a unit test started a process (subprocess.Popen*'-c', 'pass'*",
            "*_ test_starts_a_spawned_worker _*",
            "E*Failed: a unit test started a process (subprocess.Popen*multiprocessing*",
            "*_ test_imports_lightning _*",
            "E*Failed: a unit test * imported Lightning: call the CLI in this process (the main_cli fixture, "
            "run_main) or move the test out of tests/unit/ into the integration tier",
        ]
    )


def test_a_test_in_two_tiers_is_refused(with_tiers: pytest.Pytester) -> None:
    with_tiers.makepyfile(
        test_two="import pytest\n\n@pytest.mark.slow\n@pytest.mark.distributed\ndef test_x():\n    pass\n"
    )
    result = with_tiers.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret != 0
    expected = f"test_x is in tiers ['distributed', 'slow']; a test belongs to exactly one of {list(TIERS)}"
    assert expected in result.stderr.str()
