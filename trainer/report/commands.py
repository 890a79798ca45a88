"""The `report`, `compare` and `runs` subcommands of the `trainer` CLI (wired in trainer/cli.py)."""

from __future__ import annotations

import argparse

COMMANDS = ("report", "compare", "runs")


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """Adds the subcommands' parsers to the `trainer` CLI."""


def run(args: argparse.Namespace) -> int:
    """Runs one of COMMANDS; returns the exit status."""
    raise NotImplementedError(args.command)
