"""`python -m trainer ...` and the `trainer` command (pyproject's entry point); torchrun runs it too."""

import sys


def run() -> int:
    # Ctrl-C while the CLI's own modules import (pydantic builds the config schema then) is one line too.
    try:
        from trainer.cli import main
    except KeyboardInterrupt:
        print("error: interrupted (Ctrl-C); nothing was saved", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    raise SystemExit(run())
