"""The suite's tiers, their per-test timeouts, and the guard that keeps the unit tier fast (a pytest plugin).

Every test belongs to exactly one tier, picked with `-m`:

- unit: the files in tests/unit/; no process started, Lightning never imported, no training.
- integration: single-process tiny fits through the real CLI (the default of every other test).
- distributed: gloo ranks and DeepSpeed engines (`@pytest.mark.distributed`).
- cluster: SLURM and the two namespaced nodes (`slurm` and `multinode` tests).
- slow: the accuracy floors on the full data sets.

Tests run tier by tier in that order, so a broken unit answers first. A test over its tier's timeout
fails (pytest-timeout); a `@pytest.mark.timeout` of its own overrides that.
"""

from __future__ import annotations

import _posixsubprocess
import os
import sys
from pathlib import Path

import pytest

# Seconds per test: a hang fails the one test, not the whole run, and a test that creeps past its tier's
# budget shows up here before it shows up in CI's total.
TIER_TIMEOUTS = {"unit": 30, "integration": 300, "distributed": 600, "cluster": 900, "slow": 900}
TIERS = tuple(TIER_TIMEOUTS)
# The markers that say "cluster".
CLUSTER_MARKERS = ("slurm", "multinode")
# Audit events that start another process (https://docs.python.org/3/library/audit_events.html).
PROCESS_EVENTS = frozenset(
    {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "pty.spawn"}
)
# Lightning under any of its package names.
LIGHTNING = ("lightning", "pytorch_lightning", "lightning_fabric")
# Set by the guard test: a unit test that cannot be checked (Lightning was imported before it) fails.
STRICT_GUARD = "TRAINER_STRICT_UNIT_GUARD"


def tier_of(item: pytest.Item) -> str:
    tiers = [name for name in TIERS if item.get_closest_marker(name)]
    if len(tiers) != 1:
        why = " (a test under a unit/ folder is unit)" if "unit" in tiers else ""
        raise pytest.UsageError(
            f"{item.nodeid} is in tiers {tiers}{why}; a test belongs to exactly one of {list(TIERS)}"
        )
    return tiers[0]


def in_unit_folder(path: Path) -> bool:
    return "unit" in path.parent.parts


def pytest_configure(config: pytest.Config) -> None:
    for name in TIERS:  # pyproject.toml describes them; here for a run of this plugin alone (test_tiers.py)
        config.addinivalue_line("markers", f"{name}: a tier of the suite (tests/tiers.py)")
    sys.addaudithook(_audit)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """`-m unit` collects tests/unit/ alone: the rest would be deselected anyway (the unit tier is that folder),
    and importing it would import Lightning before the guard could see a unit test do so."""
    only_unit = config.option.markexpr.strip() == "unit"
    test_file = collection_path.suffix == ".py" and collection_path.name.startswith("test_")
    return True if only_unit and test_file and not in_unit_folder(collection_path) else None


def pytest_collectreport(report: pytest.CollectReport) -> None:
    global _lightning_collected_by
    if _lightning_collected_by is None and _lightning_loaded():
        _lightning_collected_by = report.nodeid or "conftest.py"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        unit_folder = in_unit_folder(item.path)
        if item.get_closest_marker("unit") and not unit_folder:
            raise pytest.UsageError(f"{item.nodeid} is marked unit outside a unit/ folder, where the guard checks it")
        if unit_folder:
            item.add_marker(pytest.mark.unit)
        if any(item.get_closest_marker(name) for name in CLUSTER_MARKERS):
            item.add_marker(pytest.mark.cluster)
        if not any(item.get_closest_marker(name) for name in TIERS):
            item.add_marker(pytest.mark.integration)
        tier = tier_of(item)
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TIER_TIMEOUTS[tier]))
    items.sort(key=lambda item: TIERS.index(tier_of(item)))  # stable: a module's tests stay together


# What the running unit test did that a unit test must not do; None outside unit tests.
_forbidden: list[str] | None = None
# The collected module (or conftest) that first imported Lightning, if collection did.
_lightning_collected_by: str | None = None


def _audit(event: str, args: tuple) -> None:
    if _forbidden is not None and event in PROCESS_EVENTS:
        _forbidden.append(f"started a process ({event} {str(args[:2])[:200]})")


def _lightning_loaded() -> bool:
    return any(name in sys.modules for name in LIGHTNING)


def _fork_exec_recorded(fork_exec):
    """multiprocessing's spawn and forkserver start processes through _posixsubprocess.fork_exec, which
    raises no audit event of its own."""

    def recorded(*args, **kwargs):
        _audit("subprocess.Popen", (args[1] if len(args) > 1 else "?", args[0] if args else "?"))
        return fork_exec(*args, **kwargs)

    return recorded


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    """Fixtures included: the first unit test to use a module- or session-scoped one sets it up here."""
    return (yield from _guarded(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """A unit test that starts a process or imports Lightning fails: it belongs to the integration tier."""
    return (yield from _guarded(item))


def _guarded(item: pytest.Item):
    global _forbidden
    if item.get_closest_marker("unit") is None:
        return (yield)
    lightning_before = _lightning_loaded()
    if lightning_before and os.environ.get(STRICT_GUARD):
        by = f" by {_lightning_collected_by}" if _lightning_collected_by else ""
        pytest.fail(f"Lightning was imported{by} before this unit test ran; the guard cannot check it")
    _forbidden = []
    fork_exec = _posixsubprocess.fork_exec
    _posixsubprocess.fork_exec = _fork_exec_recorded(fork_exec)
    try:
        result = yield
    finally:
        found, _forbidden = _forbidden, None
        _posixsubprocess.fork_exec = fork_exec
    if not lightning_before and _lightning_loaded():
        found.append("imported Lightning")
    if found:
        pytest.fail(
            f"a unit test {'; '.join(found)}: call the CLI in this process (the main_cli fixture, run_main) or "
            "move the test out of tests/unit/ into the integration tier"
        )
    return result
