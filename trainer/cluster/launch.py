"""`trainer fit R trainer.devices=N` on one machine: N worker processes started by torchrun's elastic agent.

The command runs the agent in this process (`torch.distributed.launcher`, what `torchrun --standalone`
runs) and every worker runs the same `python -m trainer ...` words under it, exactly as it would under
a torchrun the user started. So there is one way to start ranks, whatever the launcher: torchrun,
`trainer fit`, launch/*.sh or SLURM.

Only rank 0's output reaches the terminal; the other ranks write theirs to files, and a rank that fails
alone has its last line shown. The exit status is rank 0's (2 bad input, 3 diverged, 128 + signal),
and a signal sent to this process reaches every worker, which saves and stops as a single process would.
A worker that dies (kill -9, the out-of-memory killer) takes the others down: one line names it, the run's
newest checkpoint and the command that continues it, exit status 5.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from trainer.cluster.env import RUN_DIR_NOTE, elastic_error_file
from trainer.cluster.peers import rank_that_died, where_to_go_on
from trainer.errors import UserError
from trainer.quiet import print_on_a_line_of_its_own, quiet_elastic_agent

# The agent waits this long for workers to save a checkpoint and exit after a stop signal (torchrun's
# own default is 30 s), then kills them; older torch keeps its 30 s.
SHUTDOWN_GRACE_S = 120
EXIT_FAILED = 1
EXIT_PROCESS_DIED = 5  # as trainer.cli's: a worker died, and the others stopped
RUN_DIR_NOTE_FILE = "run_dir"  # in the workers' log folder: where rank 0 notes its run directory
STATUS_KEY = "trainer_exit_status"  # beside torchelastic's own keys in a worker's error file


def run_workers(nproc: int, argv: list[str], gpu_indices: list[int] | None = None) -> int:
    """Run `python -m trainer ARGV` in `nproc` processes under torchrun's agent; the run's exit status."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    quiet_elastic_agent()
    log_dir = Path(tempfile.mkdtemp(prefix="trainer-workers-"))
    # Newer torch only: forwarding SIGUSR1 (torch 2.9) and a longer grace to save before SIGKILL (2.12).
    known = {field.name for field in dataclasses.fields(LaunchConfig)}
    newer = {
        "signals_to_handle": "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",
        "shutdown_timeout": SHUTDOWN_GRACE_S,
    }
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
        **{name: value for name, value in newer.items() if name in known},
    )
    previous_visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    previous_note = os.environ.get(RUN_DIR_NOTE)
    os.environ[RUN_DIR_NOTE] = str(log_dir / RUN_DIR_NOTE_FILE)  # the workers inherit it
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
        _restore_env(RUN_DIR_NOTE, previous_note)
    if status != EXIT_FAILED:  # an unexplained failure keeps its workers' logs, named in its line
        shutil.rmtree(log_dir, ignore_errors=True)
    return status


def _failure_status(failures: dict, log_dir: Path) -> int:
    """The run's exit status from its failed ranks, saying why in one line if rank 0 (whose output the
    terminal shows) did not.

    A worker that fails on its own terms leaves its line and status in the agent's error file (see
    trainer.cli); the others fail without one (killed by the agent once a first rank failed, or crashed).
    """
    reported = {rank: f for rank, f in failures.items() if STATUS_KEY in (f.error_file_data or {})}
    lost_a_peer = ranks_that_lost_a_peer(failures)
    died = rank_that_died(failures, lost_a_peer)
    if died is not None:  # the survivors said nothing (see trainer.cli): this line names the rank
        rank, how = died
        print_on_a_line_of_its_own(
            f"error: rank {rank} died ({how}) and the other ranks stopped; {where_to_go_on_from(log_dir)}",
            after_bars=True,
        )
        return EXIT_PROCESS_DIED
    reported = {rank: f for rank, f in reported.items() if rank not in lost_a_peer}
    if 0 in reported:  # rank 0 said it on the terminal
        return int(reported[0].error_file_data[STATUS_KEY])
    if reported:
        rank = min(reported)
        print(reported[rank].message, file=sys.stderr, flush=True)
        return int(reported[rank].error_file_data[STATUS_KEY])
    if 0 in failures and failures[0].exitcode > 0:
        return failures[0].exitcode  # a crash: its traceback is on the terminal
    rank = min(failures)
    failure = failures[rank]
    if failure.exitcode < 0:
        print(f"error: rank {rank} was killed by {signal.Signals(-failure.exitcode).name}", file=sys.stderr)
        return 128 - failure.exitcode
    line = _last_line(log_dir, rank)
    print(f"error: rank {rank} failed (exit status {failure.exitcode}): {line or 'no output'}; its log: {log_dir}",
          file=sys.stderr)  # fmt: skip
    return failure.exitcode or EXIT_FAILED


def ranks_that_lost_a_peer(failures: dict) -> set[int]:
    """The ranks that ended saying another process was gone (PeerLost's exit status in their error file)."""
    said = {rank: (f.error_file_data or {}).get(STATUS_KEY) for rank, f in failures.items()}
    return {rank for rank, status in said.items() if str(status) == str(EXIT_PROCESS_DIED)}


def where_to_go_on_from(log_dir: Path) -> str:
    """The run's checkpoint and resume command, from the run directory rank 0 noted (see trainer.api)."""
    note = log_dir / RUN_DIR_NOTE_FILE
    run_dir = Path(note.read_text()) if note.is_file() else None
    recipe = None
    if run_dir is not None and (run_dir / "config.yaml").is_file():
        import yaml

        with contextlib.suppress(yaml.YAMLError, OSError, AttributeError):
            recipe = yaml.safe_load((run_dir / "config.yaml").read_text()).get("name")
    return where_to_go_on(run_dir if run_dir is not None and run_dir.is_dir() else None, recipe)


def _last_line(log_dir: Path, rank: int) -> str:
    for path in sorted(log_dir.rglob(f"attempt_*/{rank}/stderr.log")):
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return ""


def report_failure(line: str, status: int) -> None:
    """A worker of torchrun's agent leaves its one line and exit status in the agent's error file:
    `trainer fit` then shows the line of a rank whose output it does not show (see _failure_status), and a
    plain torchrun names it in its report instead of "<N/A>". Called after the line is printed, so a rank
    killed in between prints it twice at worst, never not at all."""
    path = elastic_error_file()
    if path is None:
        return
    with contextlib.suppress(OSError):
        Path(path).write_text(json.dumps({"message": line, "timestamp": int(time.time()), STATUS_KEY: status}))


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
