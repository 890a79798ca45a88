"""Two nodes for real: network namespaces with their own addresses, hostnames and hosts files on a private
bridge, the file system shared (tests/netns_nodes.py). torchrun runs on each node, as on a cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from helpers import start_or_skip
from netns_nodes import Nodes, NodesUnavailable

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.multinode
TINY = ("model.channels=[8,16]", "trainer.max_steps=6", "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1", "trainer.accelerator=cpu")  # fmt: skip
TIMEOUT = 240  # seconds for a 2-node job; a hang fails the test instead of the suite


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory):
    made = Nodes(tmp_path_factory.mktemp("nodes"))
    start_or_skip(made.start, NodesUnavailable, "TRAINER_REQUIRE_MULTINODE", "pair of namespaced nodes")  # CI: root
    yield made
    made.stop()


def _torchrun_on_each_node(nodes: Nodes, cwd: Path, words: list[str], env: dict[str, str] | None = None):
    """launch/torchrun.sh on node1 and node2 at once, rendezvous on node1; both results, in node order."""
    environment = {**os.environ, "NNODES": "2", "MASTER_ADDR": "node1", "MASTER_PORT": "29400",
                   "RDZV_ID": f"mn-{uuid.uuid4().hex[:8]}", "PYTHON": sys.executable, **(env or {})}  # fmt: skip
    launched = [
        subprocess.Popen(
            node.command(["bash", str(REPO / "launch" / "torchrun.sh"), *words]),
            cwd=cwd,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for node in nodes.nodes
    ]
    results = []
    for process in launched:
        try:
            out, err = process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for other in launched:
                other.kill()
            pytest.fail(f"the 2-node job hung for {TIMEOUT} s")
        results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return results


@pytest.mark.parametrize("strategy", ["ddp", "deepspeed_stage_2"])
def test_torchrun_trains_across_two_nodes(nodes: Nodes, tmp_path: Path, strategy: str) -> None:
    results = _torchrun_on_each_node(nodes, tmp_path, ["digits_cnn", f"trainer.strategy={strategy}", *TINY])
    for node, result in zip(nodes.nodes, results, strict=True):
        assert result.returncode == 0, f"{node.hostname}: {result.stderr[-3000:]}"
    runs = list((tmp_path / "runs" / "digits_cnn").iterdir())
    assert len(runs) == 1, runs  # one run directory on the shared file system, written by rank 0 alone
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_step"] == 6
    assert sorted(summary["hosts"]) == ["node1", "node2"]  # one rank on each node
    assert summary["val"]["val/loss"] > 0
    # rank 0 printed the summary; the other node's worker printed nothing on stdout
    assert sum(bool(r.stdout.strip()) for r in results) == 1


def test_a_hostname_that_resolves_to_loopback_is_one_line_at_start(nodes: Nodes, tmp_path: Path) -> None:
    """Debian's `127.0.1.1 <hostname>`: gloo would bind to loopback and the other node wait for it."""
    node1 = nodes.nodes[0]
    broken = nodes.write_hosts("node1-loopback", {"node1": "127.0.1.1"})
    hosts = node1.hosts_file.read_bytes()
    node1.hosts_file.write_bytes(broken.read_bytes())
    try:
        results = _torchrun_on_each_node(nodes, tmp_path, ["digits_cnn", *TINY])
    finally:
        node1.hosts_file.write_bytes(hosts)
    first = [line for line in results[0].stderr.splitlines() if line.startswith("error: ")]
    assert results[0].returncode == 2 and first, results[0].stderr[-3000:]
    assert "hostname 'node1' resolves to 127.0.1.1 (loopback)" in first[0]
    assert results[1].returncode != 0  # and node2 gave up rather than wait
    assert not (tmp_path / "runs").exists()


def test_a_head_node_that_does_not_resolve_is_one_line_at_start(nodes: Nodes, tmp_path: Path) -> None:
    results = _torchrun_on_each_node(nodes, tmp_path, ["digits_cnn", *TINY], env={"MASTER_ADDR": "node9"})
    for node, result in zip(nodes.nodes, results, strict=True):
        assert result.returncode == 2, result.stderr[-3000:]
        assert "Traceback" not in result.stderr
        assert f"'node9' does not resolve on node '{node.hostname}'" in result.stderr


def test_a_recipe_asking_for_more_nodes_than_launched_is_one_line(nodes: Nodes, tmp_path: Path) -> None:
    results = _torchrun_on_each_node(nodes, tmp_path, ["digits_cnn", "trainer.num_nodes=3", *TINY])
    for result in results:
        assert result.returncode != 0
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert errors and "trainer.num_nodes=3 but the launcher started 2 node(s)" in errors[0], result.stderr[-3000:]
