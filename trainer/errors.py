"""The one exception type that means "the user gave bad input": the CLI prints it as one line, exit 2."""


class UserError(Exception):
    """Bad input from the user. The message names the problem and how to fix it."""


class TrainingDiverged(Exception):
    """The loss became NaN or infinite. The run stopped before that step changed any weight or checkpoint."""
