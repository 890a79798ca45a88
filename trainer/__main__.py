"""`python -m trainer ...` and the `trainer` command (pyproject's entry point); torchrun runs it too."""

import atexit
import contextlib
import os
import signal
import sys
import threading
import traceback

EXIT_BROKEN_PIPE = 128 + 13  # SIGPIPE, as a shell tool stopped by `| head` would give


def run() -> int:
    # First, before any library imports: Ctrl-C inside an import must not raise (see install_ctrl_c_guard).
    try:
        from trainer.cluster.signals import install_ctrl_c_guard
    except KeyboardInterrupt:  # inside the standard library's few imports before the guard: nothing swallows it
        print("error: interrupted (Ctrl-C); nothing was saved", file=sys.stderr)
        return 130
    install_ctrl_c_guard()
    from trainer.cli import made_a_process_group, main

    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`trainer runs | head -1`): no traceback. Python's own flush at exit would
        # fail again, so stdout now points at /dev/null (the recipe of Python's signal documentation).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = EXIT_BROKEN_PIPE
    except Exception:
        if not made_a_process_group():
            raise
        traceback.print_exc()  # a bug's traceback, as Python would print it, and its status
        status = 1
    if made_a_process_group():
        end_before_finalization(status)
    return status


def end_before_finalization(status: int) -> None:
    """Exit as Python's shutdown would, up to interpreter finalization, and no further.

    A process-group worker thread (gloo's, still running: see trainer.cli.made_a_process_group) that drops the
    last reference to a tensor of a finished collective must take the GIL; once finalization has begun that
    ends the thread inside a C++ destructor and aborts the whole process ("terminate called without an active
    exception"): a finished 2-rank run reported as a crash, seen in CI on `trainer test` and `trainer fit`
    under ZeRO-3. So the steps before finalization run here (threading's exit hooks and non-daemon threads;
    atexit handlers: wandb's, logging's flush, multiprocessing's child clean-up), and the process ends there.
    A bug's traceback takes this way too (see run): it would otherwise end as that abort, a "died" rank."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run is over: a Ctrl-C now would only cut the clean-up
    # Python's own first step: its exit hooks (concurrent.futures wakes idle pool workers, such as the
    # compiler's, which a bare join would wait on forever), then every non-daemon thread joined.
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader gone, a stream closed: nothing can reach it
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    raise SystemExit(run())
