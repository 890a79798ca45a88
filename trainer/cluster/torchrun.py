"""torchrun as the SLURM script starts it: `torch.distributed.run`, unchanged but for how a signal ends it.

A job that requeues itself (`scontrol requeue`) or is cancelled gets SIGTERM from SLURM on every process,
torchrun's agent included, once the workers have saved. The agent then stops its workers and raises
SignalException, which torchrun prints as a traceback: in the job's log, from every node, at every requeue,
where nothing failed. Here that end is one line and the status a signal gives (128 + its number).

    python -m trainer.cluster.torchrun TORCHRUN_ARGS...
"""

from __future__ import annotations

import sys

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.run import main


def run() -> None:
    try:
        main()
    except SignalException as stop:  # the agent has stopped its workers before raising this
        print(f"torchrun: stopped by {stop.sigval.name}, its workers with it", file=sys.stderr)
        sys.exit(128 + stop.sigval)


if __name__ == "__main__":
    run()
