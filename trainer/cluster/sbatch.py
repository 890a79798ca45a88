"""`trainer slurm`: an sbatch script for a recipe, rendered from one description of the resources.

The script is `slurm/train.sbatch` itself: its #SBATCH lines are the policy (requeue, the warning
signal, append-mode logs), the resources given here replace or join them, and the body below the
marker line is kept as it is. So a rendered script and `sbatch slurm/train.sbatch` behave the same.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from trainer.config.schema import TrainerConfig, explicit_device_count
from trainer.errors import UserError

SCRIPT_NAME = "train.sbatch"
BODY_MARKER = "# ---- body:"
MAX_SIGNAL_TIME_S = 65535  # sbatch --signal=<sig>@<sig_time>: sig_time is 16 bits
TEMPLATE_SIGNAL_GRACE_S = 120  # the template's `#SBATCH --signal=B:USR1@120`
# sbatch --time: minutes, minutes:seconds, hours:minutes:seconds, days-hours, days-hours:minutes,
# days-hours:minutes:seconds, or no limit.
_TIME = re.compile(r"\d+(:[0-5]?\d){0,2}|\d+-\d+(:[0-5]?\d){0,2}|INFINITE|UNLIMITED")
# An #SBATCH value is one shell word; a newline would end the line and start a directive of its own.
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")


@dataclass(frozen=True)
class Resources:
    """What the job asks SLURM for; workers per node are its GPUs, or its tasks when it has none."""

    nodes: int = 1
    gpus_per_node: int | None = None
    ntasks_per_node: int | None = None  # default 1
    time: str | None = None
    partition: str | None = None
    account: str | None = None
    job_name: str | None = None
    signal_grace_s: int | None = None
    output: str | None = None

    def __post_init__(self) -> None:
        for flag, value, least in (
            ("--nodes", self.nodes, 1),
            ("--gpus-per-node", self.gpus_per_node, 1),
            ("--ntasks-per-node", self.ntasks_per_node, 1),
            ("--signal-grace", self.signal_grace_s, 0),
        ):
            if value is not None and value < least:
                raise UserError(f"{flag}={value} must be at least {least}")
        if self.gpus_per_node is not None and self.ntasks_per_node is not None:
            raise UserError("give --gpus-per-node (a worker per GPU) or --ntasks-per-node (CPU workers), not both")
        if self.signal_grace_s is not None and self.signal_grace_s > MAX_SIGNAL_TIME_S:
            raise UserError(f"--signal-grace={self.signal_grace_s} is more than SLURM allows ({MAX_SIGNAL_TIME_S} s)")
        for flag, text in (
            ("--time", self.time),
            ("--partition", self.partition),
            ("--account", self.account),
            ("--job-name", self.job_name),
            ("--output", self.output),
        ):
            if text is not None and (not text or _UNSAFE.search(text)):
                raise UserError(f"{flag}={text!r} must be one word without spaces or control characters")
        if self.time is not None and not _TIME.fullmatch(self.time):
            raise UserError(
                f"--time={self.time!r} is not a SLURM time; write minutes, HH:MM:SS or D-HH:MM:SS (e.g. 24:00:00)"
            )
        limit = None if self.time is None else time_limit_seconds(self.time)
        grace = TEMPLATE_SIGNAL_GRACE_S if self.signal_grace_s is None else self.signal_grace_s
        if limit is not None and grace >= limit:
            # The warning would come at the start of every attempt: a requeue each time, until the retry cap.
            raise UserError(
                f"--time={self.time} ({limit} s) is not longer than the warning before it (--signal-grace {grace} "
                "s); give a longer --time or a shorter --signal-grace"
            )

    @property
    def workers_per_node(self) -> int:
        return self.gpus_per_node or self.ntasks_per_node or 1

    def sbatch_options(self) -> dict[str, str | None]:
        """Option -> value (None: a flag), for the options given; they replace the template's."""
        options: dict[str, str | None] = {"--nodes": str(self.nodes), "--ntasks-per-node": "1"}
        if self.gpus_per_node:
            options["--gpus-per-node"] = str(self.gpus_per_node)
        else:  # no GPU: one task per CPU worker, and torchrun starts that many workers
            options["--ntasks-per-node"] = str(self.ntasks_per_node or 1)
        for option, value in (
            ("--time", self.time),
            ("--partition", self.partition),
            ("--account", self.account),
            ("--job-name", self.job_name),
            ("--output", self.output),
        ):
            if value:
                options[option] = value
        if self.signal_grace_s is not None:
            options["--signal"] = f"B:USR1@{self.signal_grace_s}"
        return options


def check_fits_recipe(resources: Resources, trainer: TrainerConfig) -> None:
    """The job's workers against what the recipe asks, before anything is submitted."""
    asked = explicit_device_count(trainer.devices)
    if asked is not None and asked != resources.workers_per_node:
        raise UserError(
            f"trainer.devices={trainer.devices!r} but the job would start {resources.workers_per_node} workers "
            "per node; drop trainer.devices (the allocation decides) or change --gpus-per-node / --ntasks-per-node"
        )
    if trainer.num_nodes > 1 and trainer.num_nodes != resources.nodes:
        raise UserError(
            f"trainer.num_nodes={trainer.num_nodes} but the job asks for --nodes {resources.nodes}; drop "
            "trainer.num_nodes (the allocation decides) or change --nodes"
        )
    if trainer.accelerator in ("gpu", "cuda") and not resources.gpus_per_node:
        raise UserError(f"trainer.accelerator={trainer.accelerator} needs GPUs: add --gpus-per-node N")


def template_path() -> Path:
    """The shipped script: inside the wheel (`trainer/slurm`) or, for a source checkout, `./slurm`."""
    package_dir = Path(__file__).resolve().parents[1]
    for candidate in (package_dir / "slurm" / SCRIPT_NAME, package_dir.parent / "slurm" / SCRIPT_NAME):
        if candidate.is_file():
            return candidate
    raise UserError(f"slurm/{SCRIPT_NAME} is missing from this installation; reinstall with `pip install -e .`")


def render(template: str, resources: Resources, argv: list[str]) -> str:
    """The template with its #SBATCH options updated by `resources` and `argv` (recipe, overrides) built in."""
    head, marker, body = template.partition(BODY_MARKER)
    if not marker:
        raise UserError(f"the sbatch template lacks its {BODY_MARKER!r} line; reinstall trainer")
    head_lines = head.splitlines()
    options: dict[str, str | None] = {}
    for line in head_lines:
        if line.startswith("#SBATCH "):
            option, sep, value = line.removeprefix("#SBATCH ").strip().partition("=")
            options[option] = value if sep else None
    options.update(resources.sbatch_options())
    preamble = [line for line in head_lines if not line.startswith("#SBATCH ")]
    directives = [f"#SBATCH {option}" + (f"={value}" if value is not None else "") for option, value in options.items()]
    for word in argv:
        if _UNSAFE.search(word.replace(" ", "")):  # spaces are quoted; control characters are refused
            raise UserError(f"{word!r} holds a control character; write it without one")
    marker_line, _, rest = (marker + body).partition("\n")
    arguments = f"set -- {shlex.join(argv)}  # the recipe and its overrides, as `trainer slurm` was given them"
    return "\n".join([*preamble, *directives, marker_line, arguments]) + "\n" + rest


def submit(script: str) -> str:
    """Hands the script to sbatch on stdin; returns the job id."""
    if shutil.which("sbatch") is None:
        raise UserError("sbatch is not on PATH: run `trainer slurm` on a SLURM login node, or add --dry-run")
    result = subprocess.run(["sbatch", "--parsable"], input=script, capture_output=True, text=True)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"sbatch refused the job: {reason}")
    return result.stdout.strip().split(";")[0]


def time_limit_seconds(time: str) -> int | None:
    """An sbatch --time (checked against _TIME) in seconds; None for no limit."""
    if time in ("INFINITE", "UNLIMITED"):
        return None
    days, _, clock = time.rpartition("-")
    parts = [int(part) for part in clock.split(":")]
    if days:  # days-hours[:minutes[:seconds]]
        hours, minutes, seconds = (parts + [0, 0])[:3]
        return ((int(days) * 24 + hours) * 60 + minutes) * 60 + seconds
    # minutes, minutes:seconds or hours:minutes:seconds
    hours, minutes, seconds = {1: (0, parts[0], 0), 2: (0, *parts), 3: tuple(parts)}[len(parts)]
    return (hours * 60 + minutes) * 60 + seconds
