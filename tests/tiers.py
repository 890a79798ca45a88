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

import os
import sys

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
# Set by the guard test: a unit test that cannot be checked (Lightning was imported before it) fails.
STRICT_GUARD = "TRAINER_STRICT_UNIT_GUARD"


def tier_of(item: pytest.Item) -> str:
    tiers = [name for name in TIERS if item.get_closest_marker(name)]
    if len(tiers) != 1:
        raise pytest.UsageError(f"{item.nodeid} is in tiers {tiers}; a test belongs to exactly one of {list(TIERS)}")
    return tiers[0]


def pytest_configure(config: pytest.Config) -> None:
    sys.addaudithook(_audit)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        in_unit_folder = item.path.parent.name == "unit"
        if item.get_closest_marker("unit") and not in_unit_folder:
            raise pytest.UsageError(f"{item.nodeid} is marked unit outside a unit/ folder, where the guard checks it")
        if in_unit_folder:
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


def _audit(event: str, args: tuple) -> None:
    if _forbidden is not None and event in PROCESS_EVENTS:
        _forbidden.append(f"started a process ({event} {str(args[:2])[:200]})")


@pytest.fixture(autouse=True)
def unit_tier_guard(request: pytest.FixtureRequest):
    """A unit test that starts a process or imports Lightning fails: it belongs to the integration tier."""
    global _forbidden
    if request.node.get_closest_marker("unit") is None:
        yield
        return
    lightning_before = "lightning" in sys.modules
    if lightning_before and os.environ.get(STRICT_GUARD):
        pytest.fail("Lightning was imported before this unit test (at collection?); the guard cannot check it")
    _forbidden = []
    try:
        yield
    finally:
        found, _forbidden = _forbidden, None
    if not lightning_before and "lightning" in sys.modules:
        found.append("imported Lightning")
    if found:
        pytest.fail(f"a unit test {'; '.join(found)}: move it out of tests/unit/ into the integration tier")
