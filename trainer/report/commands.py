"""The `report`, `compare` and `runs` subcommands of the `trainer` CLI (wired in trainer/cli.py).

Each prints its result on stdout (the folder written, or the table of runs) and nothing else; library
output goes to stderr. What each needs is imported only when it runs: `trainer runs` never imports torch,
matplotlib or Lightning.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

COMMANDS = ("report", "compare", "runs")


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """Adds the subcommands' parsers to the `trainer` CLI."""
    report = commands.add_parser("report", help="plots and report.md of a run, in RUN_DIR/report/")
    report.add_argument("run_dir", help="a run directory written by `trainer fit`")
    compare = commands.add_parser("compare", help="overlay the curves of runs and tabulate them, in ./compare/")
    compare.add_argument("run_dirs", nargs="+", metavar="run_dir", help="two or more run directories")
    compare.add_argument("--out", type=Path, default=None, help="folder to write into (default ./compare)")
    runs = commands.add_parser("runs", help="one line per run under runs/: state, steps, best metric, wall time")
    runs.add_argument("recipe", nargs="?", default=None, help="only this recipe's runs")
    runs.add_argument("--root", type=Path, default=None, help="folder holding <recipe>/<run> (default ./runs)")


def run(args: argparse.Namespace) -> int:
    """Runs one of COMMANDS; returns the exit status."""
    if args.command == "runs":
        from trainer.report.runs import list_runs, render

        print(render(list_runs(args.root, args.recipe), args.root, args.recipe), end="", flush=True)
        return 0
    with contextlib.redirect_stdout(sys.stderr):  # torch, datasets and DeepSpeed may talk on stdout
        if args.command == "report":
            from trainer.report.report import write_report

            folder = write_report(args.run_dir)
        else:
            from trainer.report.compare import write_comparison

            folder = write_comparison(args.run_dirs, args.out)
    print(folder, flush=True)
    return 0
