"""The run directory and what writes into it: config, loggers, checkpoints, summary."""
