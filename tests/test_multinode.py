"""Two nodes for real: network namespaces with their own addresses, hostnames and hosts files on a private
bridge, the file system shared (tests/netns_nodes.py). torchrun runs on each node, as on a cluster, started
by hand (launch/torchrun.sh) or by SLURM: one slurmd in each node, slurmctld on the host
(tests/slurm_cluster.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import offline_environment, run_cli
from helpers import logged_losses, metric_series, start_or_skip
from netns_nodes import Nodes, NodesUnavailable
from slurm_cluster import ClusterUnavailable, SlurmCluster

from trainer.lifecycle.checkpoints import read_info, read_training_checkpoint

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


def _torchrun_on_each_node(nodes: Nodes, cwd: Path, words: list[str], env: dict[str, str | None] | None = None):
    """launch/torchrun.sh on node1 and node2 at once, rendezvous on node1; both results, in node order.
    `env` changes the environment (None: a variable removed)."""
    environment = {**os.environ, "NNODES": "2", "MASTER_ADDR": "node1", "MASTER_PORT": "29400",
                   "RDZV_ID": f"mn-{uuid.uuid4().hex[:8]}", "PYTHON": sys.executable, **(env or {})}  # fmt: skip
    launched = [
        subprocess.Popen(
            node.command(["bash", str(REPO / "launch" / "torchrun.sh"), *words]),
            cwd=cwd,
            env={name: value for name, value in environment.items() if value is not None},
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
        # node1 stops before its torchrun opens the rendezvous; node2's torchrun waits read_timeout for it
        # (60 s by default), then gives up.
        results = _torchrun_on_each_node(nodes, tmp_path, ["digits_cnn", *TINY], env={"RDZV_CONF": "read_timeout=10"})
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


@pytest.mark.parametrize(
    ("master_addr", "expected"),
    [
        # torchrun.sh's one-node default: each node would hold a rendezvous of its own and wait 10 minutes
        ("localhost", "the head node 'localhost' resolves to 127.0.0.1 (loopback), but a job of 2 nodes needs"),
        (None, "error: set MASTER_ADDR to the head node's hostname or address on every node (NNODES=2)"),
    ],
)
def test_a_loopback_or_missing_head_address_across_nodes_is_one_line(
    nodes: Nodes, tmp_path: Path, master_addr: str | None, expected: str
) -> None:
    results = _torchrun_on_each_node(nodes, tmp_path, ["digits_cnn", *TINY], env={"MASTER_ADDR": master_addr})
    for result in results:
        assert result.returncode == 2 and expected in result.stderr, result.stderr[-3000:]
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_a_recipe_asking_for_more_nodes_than_launched_is_one_line(nodes: Nodes, tmp_path: Path) -> None:
    results = _torchrun_on_each_node(nodes, tmp_path, ["digits_cnn", "trainer.num_nodes=3", *TINY])
    for result in results:
        assert result.returncode != 0
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert errors and "trainer.num_nodes=3 but the launcher started 2 node(s)" in errors[0], result.stderr[-3000:]


# ---------------------------------------------------------------------------------------------- SLURM

# ZeRO-2, so that each node writes its own shard of every checkpoint. 1,293 training digits / (2 ranks x 16)
# = 41 steps an epoch.
SLURM_RUN = ("digits_cnn", "trainer.strategy=deepspeed_stage_2", "trainer.max_epochs=4",
             "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1")  # fmt: skip
SLURM_STEPS = 164
SCRIPT = REPO / "slurm" / "train.sbatch"


@pytest.fixture(scope="module")
def two_node_slurm(nodes: Nodes, tmp_path_factory: pytest.TempPathFactory):
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"), cpus=1, nodes=nodes)  # 2 cores: one for each node
    start_or_skip(cluster.start, ClusterUnavailable, "TRAINER_REQUIRE_MULTINODE", "two-node SLURM cluster")
    yield cluster
    cluster.stop()


@pytest.fixture
def slurm(two_node_slurm: SlurmCluster) -> SlurmCluster:
    yield two_node_slurm
    two_node_slurm.cancel_all()  # a failed test leaves no job behind for the next one


@dataclass(frozen=True)
class FinishedJob:
    job: str
    script: str  # the batch script SLURM ran, as it kept it
    rendered: str  # what `trainer slurm --dry-run` printed
    state: dict[str, str]
    log: str
    run_dir: Path


@pytest.fixture(scope="module")
def uninterrupted(two_node_slurm: SlurmCluster, session_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    """`trainer slurm SLURM_RUN --nodes 2 --dry-run`, submitted as printed and run to its end: the job the
    tests check and the one a preempted job must end equal to."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    env = {**offline_environment(folder, session_cache), "PYTHON": sys.executable}
    words = ("--nodes", "2", "--ntasks-per-node", "1", "--output", str(folder / "job.out"), "--dry-run")
    rendered = run_cli("slurm", *SLURM_RUN, *words, cwd=folder, env=env)
    assert rendered.returncode == 0, rendered.stderr
    (folder / "job.sbatch").write_text(rendered.stdout)
    job = two_node_slurm.run(["sbatch", "--parsable", "job.sbatch"], cwd=folder, env=env).stdout.strip()
    state = two_node_slurm.wait_done(job)
    script = two_node_slurm.run(["scontrol", "write", "batch_script", job, "-"]).stdout
    log = (folder / "job.out").read_text()
    return FinishedJob(job, script, rendered.stdout, state, log, folder / "runs" / "digits_cnn" / f"slurm-{job}")


def test_trainer_slurm_script_runs_one_rank_on_each_of_two_nodes(uninterrupted: FinishedJob) -> None:
    assert uninterrupted.state["JobState"] == "COMPLETED", uninterrupted.log[-3000:]
    assert uninterrupted.script == uninterrupted.rendered  # what --dry-run shows is what SLURM ran
    assert uninterrupted.state["NodeList"] == "node[1-2]"
    summary = json.loads((uninterrupted.run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and sorted(summary["hosts"]) == ["node1", "node2"]
    assert summary["global_step"] == SLURM_STEPS and summary["test"]["test/acc"] > 0.9
    assert "Traceback" not in uninterrupted.log


def test_preempted_two_node_job_checkpoints_on_both_nodes_and_resumes_to_the_uninterrupted_weights(
    slurm: SlurmCluster, uninterrupted: FinishedJob, tmp_path: Path
) -> None:
    log = tmp_path / "job.out"
    submit = ["sbatch", "--parsable", "--nodes=2", "--ntasks-per-node=1", f"--output={log}", str(SCRIPT)]
    job = slurm.run([*submit, *SLURM_RUN], cwd=tmp_path, env={"PYTHON": sys.executable}).stdout.strip()
    run_dir = tmp_path / "runs" / "digits_cnn" / f"slurm-{job}"
    slurm.wait_until_logged(job, lambda: logged_losses(run_dir), 40, timeout=TIMEOUT)
    # The time-limit warning as `--signal=B:USR1` sends it: to the batch shell alone, which passes it on to
    # the job's processes on both nodes.
    slurm.run(["scancel", "--signal=USR1", "--batch", job])
    slurm.wait_for(job, ("PENDING",), timeout=120)  # requeued by the job itself
    stopped = read_info(run_dir / "checkpoints" / "last.ckpt")
    shards = sorted(p.name for p in (run_dir / "checkpoints" / "last.ckpt" / "checkpoint").glob("*optim_states.pt"))
    assert 40 <= stopped.global_step < SLURM_STEPS
    assert shards == [f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt" for rank in (0, 1)]  # one per node
    state = slurm.wait_done(job)

    text = log.read_text()
    assert state["JobState"] == "COMPLETED" and state["Restarts"] == "1", text[-3000:]
    assert f"SLURM job {job} stopped by SIGUSR1: requeued (1 of 20)" in text
    assert "Traceback" not in text  # the requeue's SIGTERM ends each node's torchrun in one line
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == SLURM_STEPS and sorted(summary["hosts"]) == ["node1", "node2"]
    # Every step trained once, and on the same batches: the loss curve and the weights of the job that ran
    # straight through (bitwise here: DeepSpeed's own shards, the RNG restored on both ranks).
    losses, expected = metric_series(run_dir, "train/loss"), metric_series(uninterrupted.run_dir, "train/loss")
    assert len(losses) == len(expected) == SLURM_STEPS
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(expected), rtol=1e-5, atol=1e-6)
    weights = read_training_checkpoint(run_dir / "checkpoints" / "last.ckpt").state_dict
    expected_weights = read_training_checkpoint(uninterrupted.run_dir / "checkpoints" / "last.ckpt").state_dict
    assert weights.keys() == expected_weights.keys()
    for name, value in weights.items():
        torch.testing.assert_close(value, expected_weights[name], rtol=1e-5, atol=1e-6, msg=name)


def test_a_time_limit_warning_while_the_workers_start_is_not_lost(slurm: SlurmCluster, tmp_path: Path) -> None:
    """USR1 right after the job starts, while the workers still import (and ignore USR1): the batch shell
    leaves the warning in a file, and the workers act on it as training starts: checkpoint, requeue."""
    log = tmp_path / "job.out"
    submit = ["sbatch", "--parsable", "--nodes=2", "--ntasks-per-node=1", f"--output={log}", str(SCRIPT)]
    words = ["digits_cnn", "trainer.strategy=ddp", "model.channels=[8,16]", "trainer.max_steps=30",
             "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1"]  # fmt: skip
    job = slurm.run([*submit, *words], cwd=tmp_path, env={"PYTHON": sys.executable}).stdout.strip()
    deadline = time.monotonic() + TIMEOUT
    while not (log.is_file() and f"trainer: job {job} attempt 1" in log.read_text()):  # the shell's traps are set
        assert time.monotonic() < deadline, slurm.job_state(job)
        time.sleep(0.05)
    assert "trainer: run directory" not in log.read_text()  # the workers have not started training
    slurm.run(["scancel", "--signal=USR1", "--batch", job])
    state = slurm.wait_done(job, timeout=TIMEOUT)

    text = log.read_text()
    assert state["JobState"] == "COMPLETED" and state["Restarts"] == "1", text[-3000:]
    assert f"SLURM job {job} stopped by SIGUSR1: requeued (1 of 20)" in text
    summary = json.loads((tmp_path / "runs" / "digits_cnn" / f"slurm-{job}" / "summary.json").read_text())
    assert summary["global_step"] == 30 and summary["stopped_by"] is None


def test_a_recipe_asking_for_more_nodes_than_the_allocation_is_one_line(slurm: SlurmCluster, tmp_path: Path) -> None:
    log = tmp_path / "job.out"
    submit = ["sbatch", "--parsable", "--nodes=2", "--ntasks-per-node=1", f"--output={log}", str(SCRIPT)]
    words = ["digits_cnn", "trainer.num_nodes=3", *TINY]
    job = slurm.run([*submit, *words], cwd=tmp_path, env={"PYTHON": sys.executable}).stdout.strip()
    state = slurm.wait_done(job, timeout=TIMEOUT)

    assert state["JobState"] == "FAILED"
    errors = [line for line in log.read_text().splitlines() if line.startswith("error: ")]
    assert errors and "trainer.num_nodes=3 but the launcher started 2 node(s)" in errors[0], log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()  # torchrun ends with the worker's status, not ChildFailedError's
