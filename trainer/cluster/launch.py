"""`trainer fit R trainer.devices=N` on one machine: N worker processes started by torchrun's elastic agent.

The command runs the agent in this process (`torch.distributed.launcher`, what `torchrun --standalone`
runs) and every worker runs the same `python -m trainer ...` words under it, exactly as it would under
a torchrun the user started. So there is one way to start ranks, whatever the launcher: torchrun,
`trainer fit`, launch/*.sh or SLURM.

Only rank 0's output reaches the terminal; the other ranks write theirs to files, and a rank that fails
alone has its last line shown. The exit status is rank 0's (2 bad input, 3 diverged, 128 + signal),
and a signal sent to this process reaches every worker, which saves and stops as a single process would.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from trainer.errors import UserError

# The agent waits this long for workers to save a checkpoint and exit after a stop signal (torchrun's
# own default is 30 s), then kills them.
SHUTDOWN_GRACE_S = 120
EXIT_FAILED = 1


def run_workers(nproc: int, argv: list[str], gpu_indices: list[int] | None = None) -> int:
    """Run `python -m trainer ARGV` in `nproc` processes under torchrun's agent; the run's exit status."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # The agent's own progress and failure reports: the workers say what went wrong in one line each.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    logging.getLogger("torch.distributed.launcher").setLevel(logging.CRITICAL)
    log_dir = Path(tempfile.mkdtemp(prefix="trainer-workers-"))
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        # "none": the workers name no job, so a run gets its timestamped directory as with one process.
        run_id="none",
        role="trainer",
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",  # a private store on a free port, as `torchrun --standalone`
        max_restarts=0,
        monitor_interval=0.1,
        logs_specs=DefaultLogsSpecs(log_dir=str(log_dir), redirects={r: Std.ALL for r in range(1, nproc)}),
        signals_to_handle="SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",
        shutdown_timeout=SHUTDOWN_GRACE_S,
    )
    previous_visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if gpu_indices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(_visible_gpu(i, previous_visible) for i in gpu_indices)
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", "trainer", *argv)
        status = 0
    except ChildFailedError as failed:
        status = _failure_status(failed.failures, log_dir)
    except SignalException as stopped:
        status = 128 + int(stopped.sigval)  # the workers saved and stopped; rank 0 printed the summary
    finally:
        if gpu_indices is not None:
            _restore_env("CUDA_VISIBLE_DEVICES", previous_visible)
    if status in (0, 2, 3, 4) or status > 128:
        shutil.rmtree(log_dir, ignore_errors=True)
    return status


def _failure_status(failures: dict, log_dir: Path) -> int:
    """Rank 0's exit status when it failed itself (it already said why); else the first failed rank's, with
    the last line it wrote."""
    first = min(failures)
    rank0 = failures.get(0)
    if rank0 is not None and rank0.exitcode > 0:
        return rank0.exitcode
    failure = failures[first]
    line = _last_line(log_dir, first)
    if failure.exitcode < 0:  # killed by a signal
        print(f"error: rank {first} was killed by {signal.Signals(-failure.exitcode).name}", file=sys.stderr)
        return 128 - failure.exitcode
    if line:
        print(line if line.startswith("error:") else f"error: rank {first}: {line}", file=sys.stderr)
    else:
        print(f"error: rank {first} failed with exit status {failure.exitcode}; its log: {log_dir}", file=sys.stderr)
    return failure.exitcode or EXIT_FAILED


def _last_line(log_dir: Path, rank: int) -> str:
    for path in sorted(log_dir.rglob(f"attempt_*/{rank}/stderr.log")):
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return ""


def _visible_gpu(index: int, visible: str | None) -> str:
    """The GPU a recipe's index names, through an existing CUDA_VISIBLE_DEVICES."""
    if visible is None:
        return str(index)
    names = [name for name in visible.split(",") if name]
    if index >= len(names):
        raise UserError(f"trainer.devices names GPU {index} but CUDA_VISIBLE_DEVICES={visible} shows {len(names)}")
    return names[index]


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
