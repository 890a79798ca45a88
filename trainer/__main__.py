"""`python -m trainer ...` and the `trainer` command (pyproject's entry point); torchrun runs it too."""

import os
import sys

EXIT_BROKEN_PIPE = 128 + 13  # SIGPIPE, as a shell tool stopped by `| head` would give


def run() -> int:
    # First, before any library imports: Ctrl-C inside an import must not raise (see install_ctrl_c_guard).
    try:
        from trainer.cluster.signals import install_ctrl_c_guard
    except KeyboardInterrupt:  # inside the standard library's few imports before the guard: nothing swallows it
        print("error: interrupted (Ctrl-C); nothing was saved", file=sys.stderr)
        return 130
    install_ctrl_c_guard()
    from trainer.cli import main

    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`trainer runs | head -1`): no traceback. Python's own flush at exit would
        # fail again, so stdout now points at /dev/null (the recipe of Python's signal documentation).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return status


if __name__ == "__main__":
    raise SystemExit(run())
