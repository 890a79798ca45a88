"""The errors the CLI turns into one line on stderr and a documented exit status (see trainer.cli)."""


class UserError(Exception):
    """Bad input from the user (exit 2). The message names the problem and how to fix it."""


class TrainingDiverged(Exception):
    """The loss or its gradients became NaN or infinite (exit 3). That step changed no weight and no checkpoint."""


class WriteFailed(Exception):
    """A write failed: a full disk, a quota, lost permissions (exit 4). What was there before (the last good
    checkpoint, the previous export) is intact, and nothing half-written is left behind."""


class PeerLost(Exception):
    """Another process of the run died or its node went down (exit 5): the others stop. The message names the
    newest checkpoint and the command that continues the run."""


def error_with_place(err: BaseException) -> str:
    """An exception from the user's own code (a custom model) in one line: its type, message and where it was
    raised, the innermost frame of the traceback."""
    import traceback

    frames = traceback.extract_tb(err.__traceback__)
    place = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}{place}"
