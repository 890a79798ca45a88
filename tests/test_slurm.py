"""Jobs on a real one-node SLURM cluster (started here, see slurm_cluster.py), 2 CPU workers each.

The job script is slurm/train.sbatch (or what `trainer slurm` renders from it); preemption is
`scancel --signal=USR1 --full`, which reaches the batch shell and every process of the job's steps.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import REPO, offline_environment, run_main
from helpers import logged_losses, start_or_skip
from slurm_cluster import ClusterUnavailable, SlurmCluster

pytestmark = pytest.mark.slurm

# 1,293 training digits / 32 = 41 steps an epoch on 2 workers; 12 epochs = 492 steps, ~10 s of training.
RUN = ("digits_cnn", "trainer.max_epochs=12", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1")
STEPS = 492
SCRIPT = REPO / "slurm" / "train.sbatch"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    start_or_skip(cluster.start, ClusterUnavailable, "TRAINER_REQUIRE_SLURM", "SLURM cluster")  # CI installs SLURM
    yield cluster
    cluster.stop()


@pytest.fixture
def slurm(cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> SlurmCluster:
    """The cluster, with this test's environment (offline, caches, the Python running the tests) for its jobs."""
    for name, value in cluster.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PYTHON", sys.executable)
    yield cluster
    cluster.cancel_all()  # a failed test leaves no job behind for the next one


def submit(slurm: SlurmCluster, *words: str, tasks: int = 2) -> str:
    """`sbatch --ntasks-per-node=2 slurm/train.sbatch WORDS`, with the job's log in ./job.out."""
    command = ["sbatch", "--parsable", f"--ntasks-per-node={tasks}", f"--output={Path.cwd() / 'job.out'}"]
    result = slurm.run([*command, *words], cwd=Path.cwd())
    return result.stdout.strip()


def preempt_after(slurm: SlurmCluster, job: str, run_dir: Path, step: int, cancel: bool = False) -> None:
    """Once the run has logged `step` steps: the time-limit warning (USR1) to every process of the job, or,
    with `cancel`, what preemption and the time limit do: SIGTERM to all, SIGKILL after KillWait."""
    slurm.wait_until_logged(job, lambda: logged_losses(run_dir), step, timeout=300)
    slurm.run(["scancel", job] if cancel else ["scancel", "--signal=USR1", "--full", job])


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")["state_dict"]


def job_log() -> str:
    return (Path.cwd() / "job.out").read_text()


@dataclass(frozen=True)
class FinishedJob:
    job: str
    state: dict[str, str]
    log: str
    run_dir: Path


@pytest.fixture(scope="module")
def uninterrupted(cluster: SlurmCluster, session_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    """`trainer slurm RUN --dry-run`, submitted as printed and run to its end: the job one test checks and the
    one a preempted job must end equal to (run once for both)."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    env = {**offline_environment(folder, session_cache), "PYTHON": sys.executable}
    words = ("--ntasks-per-node", "2", "--output", str(folder / "job.out"), "--dry-run")
    rendered = run_main("slurm", *RUN, *words, cwd=folder, env=env)
    assert rendered.returncode == 0, rendered.stderr
    assert "#SBATCH --requeue" in rendered.stdout and "#SBATCH --ntasks-per-node=2" in rendered.stdout
    (folder / "job.sbatch").write_text(rendered.stdout)
    job = cluster.run(["sbatch", "--parsable", "job.sbatch"], cwd=folder, env=env).stdout.strip()
    state = cluster.wait_done(job)
    return FinishedJob(job, state, (folder / "job.out").read_text(), folder / "runs" / "digits_cnn" / f"slurm-{job}")


def test_trainer_slurm_dry_run_script_is_submitted_and_trains_to_completion(uninterrupted: FinishedJob) -> None:
    assert uninterrupted.state["JobState"] == "COMPLETED", uninterrupted.log[-3000:]
    summary = _summary(uninterrupted.run_dir)
    assert summary["world_size"] == 2 and summary["global_step"] == STEPS and summary["stopped_by"] is None
    assert summary["test"]["test/acc"] > 0.9


def test_preempted_job_checkpoints_requeues_and_resumes_to_the_uninterrupted_weights(
    slurm: SlurmCluster, uninterrupted: FinishedJob, tmp_path: Path
) -> None:
    reference = uninterrupted.run_dir
    job = submit(slurm, str(SCRIPT), *RUN, "logger=[csv,wandb]")
    run_dir = tmp_path / "runs" / "digits_cnn" / f"slurm-{job}"
    preempt_after(slurm, job, run_dir, step=150)
    slurm.wait_for(job, ("PENDING",), timeout=120)  # requeued by the job itself
    wandb_id = (run_dir / "wandb_run_id").read_text()
    state = slurm.wait_done(job)

    log = job_log()
    assert state["JobState"] == "COMPLETED" and state["Restarts"] == "1", log
    assert f"SLURM job {job} stopped by SIGUSR1: requeued" in log
    assert "Traceback" not in log  # the requeue's SIGTERM ends torchrun in one line
    summary = _summary(run_dir)
    assert summary["global_step"] == STEPS and summary["requeued"] is False
    # Same run directory and W&B run; every step trained exactly once (no sample repeated or skipped).
    assert (run_dir / "wandb_run_id").read_text() == wandb_id
    assert len(list((run_dir / "wandb").glob(f"offline-run-*-{wandb_id}"))) == 2
    losses, expected = logged_losses(run_dir), logged_losses(reference)
    assert len(losses) == len(expected) == STEPS
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(expected), rtol=1e-5, atol=1e-6)
    # Two gloo processes, each RNG restored: measured bitwise; the stated tolerance is 1e-5.
    weights, expected_weights = final_weights(run_dir), final_weights(reference)
    assert weights.keys() == expected_weights.keys()
    for name, value in weights.items():
        torch.testing.assert_close(value, expected_weights[name], rtol=1e-5, atol=1e-6, msg=name)


def test_an_fsdp_job_preempted_twice_still_completes(slurm: SlurmCluster, tmp_path: Path) -> None:
    """Under FSDP2 (the other jobs here run DDP): each preemption saves a sharded checkpoint on both workers,
    the job requeues, and the requeued job reloads the shards."""
    # Half the other jobs' epochs (FSDP2's per-block collectives make a CPU step about twice DDP's).
    job = submit(slurm, str(SCRIPT), *RUN, "slurm.requeue_on=[SIGUSR1,SIGTERM]", "trainer.strategy=fsdp",
                 "trainer.max_epochs=6")  # fmt: skip
    run_dir = tmp_path / "runs" / "digits_cnn" / f"slurm-{job}"
    preempt_after(slurm, job, run_dir, step=60)
    slurm.wait_for(job, ("PENDING",), timeout=120)
    # The second time as preemption does it where it cancels (SIGTERM requeues where requeue_on says so).
    preempt_after(slurm, job, run_dir, step=150, cancel=True)
    state = slurm.wait_done(job)

    log = job_log()
    assert state["JobState"] == "COMPLETED" and state["Restarts"] == "2", log
    assert f"SLURM job {job} stopped by SIGTERM: requeued (2 of 20)" in log
    assert _summary(run_dir)["global_step"] == STEPS // 2
    assert len(logged_losses(run_dir)) == STEPS // 2
    assert (run_dir / "checkpoints" / "last.ckpt" / "__1_0.distcp").is_file()


def test_job_over_its_retry_cap_stops_with_a_clear_message(slurm: SlurmCluster, tmp_path: Path, main_cli) -> None:
    # Submitted by `trainer slurm` itself (sbatch reads the rendered script from stdin).
    submitted = main_cli(
        "slurm", *RUN, "slurm.max_requeues=0", "--ntasks-per-node", "2", "--output", str(tmp_path / "job.out")
    )
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip()
    assert job.isdigit()
    run_dir = tmp_path / "runs" / "digits_cnn" / f"slurm-{job}"
    preempt_after(slurm, job, run_dir, step=100)
    state = slurm.wait_done(job)

    log = job_log()
    assert state["Restarts"] == "0" and state["JobState"] != "COMPLETED", log
    assert "not requeued: it was requeued 0 times, the retry cap (slurm.max_requeues=0)" in log
    assert f"`trainer slurm digits_cnn resume={run_dir.relative_to(tmp_path)}` with this job's --nodes" in log
    summary = _summary(run_dir)
    assert summary["stopped_by"] == "SIGUSR1" and summary["requeued"] is False
    assert summary["global_step"] < STEPS and (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_cancelled_job_saves_a_checkpoint_and_stays_cancelled(slurm: SlurmCluster, tmp_path: Path) -> None:
    job = submit(slurm, str(SCRIPT), *RUN)
    run_dir = tmp_path / "runs" / "digits_cnn" / f"slurm-{job}"
    preempt_after(slurm, job, run_dir, step=100, cancel=True)
    state = slurm.wait_done(job)

    assert state["JobState"] == "CANCELLED" and state["Restarts"] == "0", job_log()
    summary = _summary(run_dir)
    assert summary["stopped_by"] == "SIGTERM" and summary["requeued"] is False
    # The job decided, before its processes ended, not to requeue (the line below); SLURM does not requeue a
    # cancelled job by itself. So no waiting for a requeue that cannot come: the state now is final.
    assert f"SLURM job {job} stopped by SIGTERM, checkpoint saved; not requeued" in job_log()
    assert f"continue with `trainer slurm digits_cnn resume={run_dir.relative_to(tmp_path)}`" in job_log()
    assert slurm.job_state(job)["JobState"] == "CANCELLED"


def _worker_pid(job: str, local_rank: int) -> int | None:
    """The pid of a job's torchrun worker, by the variables torchrun and SLURM give it (read from /proc)."""
    wanted = {f"SLURM_JOB_ID={job}".encode(), f"LOCAL_RANK={local_rank}".encode()}
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and wanted <= set((entry / "environ").read_bytes().split(b"\0")):
                found.append(int(entry.name))
        except OSError:
            continue
    return min(found, default=None)  # the worker itself, before any process it started


def test_a_worker_killed_in_a_job_ends_it_in_one_line_with_exit_5(slurm: SlurmCluster, tmp_path: Path) -> None:
    job = submit(slurm, str(SCRIPT), *RUN)
    run_dir = tmp_path / "runs" / "digits_cnn" / f"slurm-{job}"
    slurm.wait_until_logged(job, lambda: logged_losses(run_dir), 50, timeout=300)  # past the first epoch
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoints" / "last.ckpt").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    pid = _worker_pid(job, 1)
    assert pid is not None, slurm.job_state(job)
    os.kill(pid, signal.SIGKILL)
    state = slurm.wait_done(job)

    log = job_log()
    assert state["JobState"] == "FAILED" and state["ExitCode"] == "5:0", (state, log[-3000:])
    assert "torchrun: rank 1 died (killed by SIGKILL) and the other ranks stopped" in log
    assert f"continue with `trainer slurm digits_cnn resume={run_dir.resolve()}`" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


def test_recipe_asking_more_devices_than_the_allocation_fails_at_start(slurm: SlurmCluster) -> None:
    job = submit(slurm, str(SCRIPT), *RUN, "trainer.devices=4")
    state = slurm.wait_done(job, timeout=120)

    assert state["JobState"] == "FAILED"
    assert "error: trainer.devices=4 but the launcher started 2 processes per node" in job_log()
    assert "Traceback" not in job_log()


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())
