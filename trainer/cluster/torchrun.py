"""torchrun as the launch scripts and the SLURM script start it: `torch.distributed.run`, unchanged but for how
it ends badly.

- A job that requeues itself (`scontrol requeue`) or is cancelled gets SIGTERM from SLURM on every process,
  torchrun's agent included, once the workers have saved. The agent stops its workers and raises
  SignalException, which torchrun prints as a traceback: in the job's log, from every node, at every
  requeue, where nothing failed. Here it is one line and the status a signal gives (128 + its number).
- A worker that fails (bad input: its one `error:` line is already in the job's log) makes torchrun raise
  ChildFailedError, printed as another traceback per node, and exit 1. Here the exit status is the
  worker's own (2 for bad input, 3 for a diverged run), as under `trainer fit`, with no traceback. A worker
  that dies (killed, out of memory) ends the others, which each say in one line where the run can go on
  from; this names the rank that died and exits with 5, as `trainer fit` does.
- When the head node's agent, which holds the rendezvous store, ends first (its workers failed on bad
  input), another node's agent loses the store and raises RendezvousConnectionError (torch 2.13): one line
  here, pointing at the head node's log, where the reason is.

    python -m trainer.cluster.torchrun TORCHRUN_ARGS...
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.elastic.rendezvous.api import RendezvousConnectionError
from torch.distributed.run import main

from trainer.cluster.env import RUN_DIR_NOTE
from trainer.cluster.launch import (
    EXIT_FAILED,
    EXIT_PROCESS_DIED,
    RUN_DIR_NOTE_FILE,
    STATUS_KEY,
    ranks_that_lost_a_peer,
    where_to_go_on_from,
)
from trainer.cluster.peers import rank_that_died
from trainer.quiet import print_on_a_line_of_its_own


def run() -> None:
    # Where each node's first worker notes the run directory: a worker's death is then said here, in one line
    # with the checkpoint and the command that continues (the workers leave it to this, as under `trainer fit`).
    notes = Path(tempfile.mkdtemp(prefix="trainer-torchrun-"))
    os.environ[RUN_DIR_NOTE] = str(notes / RUN_DIR_NOTE_FILE)  # the workers inherit it
    try:
        main()
    except SignalException as stop:  # the agent has stopped its workers before raising this
        print(f"torchrun: stopped by {stop.sigval.name}, its workers with it", file=sys.stderr)
        sys.exit(128 + stop.sigval)
    except ChildFailedError as failed:
        sys.exit(_first_failure_status(failed, notes))
    except RendezvousConnectionError:
        print("torchrun: lost the rendezvous store on the head node, which ended first; its log says why",
              file=sys.stderr)  # fmt: skip
        sys.exit(EXIT_FAILED)
    finally:
        shutil.rmtree(notes, ignore_errors=True)


def _first_failure_status(failed: ChildFailedError, notes: Path) -> int:
    failures = failed.failures
    lost_a_peer = ranks_that_lost_a_peer(failures)
    died = rank_that_died(failures, lost_a_peer)
    if died is not None:
        rank, how = died
        print_on_a_line_of_its_own(
            f"torchrun: rank {rank} died ({how}) and the other ranks stopped; {where_to_go_on_from(notes)}",
            after_bars=True,
        )
        return EXIT_PROCESS_DIED
    # The first rank that failed on its own terms (bad input, divergence, a crash), not one that only lost it
    # as a peer.
    causes = [rank for rank in failures if rank not in lost_a_peer] or list(failures)
    rank = min(causes, key=lambda rank: failures[rank].timestamp)
    failure = failures[rank]
    reported = (failure.error_file_data or {}).get(STATUS_KEY)
    if reported is not None:  # its own status; its line is in the log
        return int(reported)
    if failure.exitcode < 0:
        print(f"torchrun: rank {rank} was killed by {signal.Signals(-failure.exitcode).name}", file=sys.stderr)
        return 128 - failure.exitcode
    return failure.exitcode or EXIT_FAILED  # a crash: its traceback is in the log


if __name__ == "__main__":
    run()
