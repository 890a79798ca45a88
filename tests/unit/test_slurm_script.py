"""`trainer slurm` and the requeue decision, without a cluster (test_slurm.py runs the jobs; test_style.py
checks that the rendered script parses)."""

from __future__ import annotations

import pytest
from conftest import REPO

from trainer.cluster.requeue import decide_requeue
from trainer.cluster.sbatch import BODY_MARKER, TEMPLATE_SIGNAL_GRACE_S
from trainer.config import load_config

SCRIPT = REPO / "slurm" / "train.sbatch"


def test_rendered_script_keeps_the_body_and_policy_and_takes_the_resources(main_cli) -> None:
    words = ("--nodes", "4", "--gpus-per-node", "8", "--time", "24:00:00", "--partition", "gpu", "--dry-run")
    result = main_cli("slurm", "shakespeare_gpt", *words, "trainer.strategy=deepspeed_stage_2")

    assert result.returncode == 0, result.stderr
    script = result.stdout
    directives = [line for line in script.splitlines() if line.startswith("#SBATCH ")]
    for expected in (
        "--nodes=4",
        "--gpus-per-node=8",
        "--ntasks-per-node=1",
        "--time=24:00:00",
        "--partition=gpu",
        "--job-name=shakespeare_gpt",
        "--requeue",
        "--signal=B:USR1@120",
        "--open-mode=append",
    ):
        assert f"#SBATCH {expected}" in directives
    assert len(directives) == len({line.split("=")[0] for line in directives})  # each option once
    assert "set -- shakespeare_gpt trainer.strategy=deepspeed_stage_2" in script
    template_body = SCRIPT.read_text().partition(BODY_MARKER)[2].partition("\n")[2]
    assert script.endswith(template_body)


@pytest.mark.parametrize("time_limit", ["90", "90:30", "24:00:00", "2-00", "2-12:30", "2-12:30:00", "UNLIMITED"])
def test_every_slurm_time_format_is_accepted(main_cli, time_limit: str) -> None:
    result = main_cli("slurm", "digits_cnn", "--time", time_limit, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert f"#SBATCH --time={time_limit}" in result.stdout


def test_cpu_workers_are_tasks_and_the_grace_is_one_setting(main_cli) -> None:
    result = main_cli("slurm", "digits_cnn", "--ntasks-per-node", "2", "--signal-grace", "300", "--dry-run")

    assert result.returncode == 0, result.stderr
    assert "#SBATCH --ntasks-per-node=2" in result.stdout and "#SBATCH --signal=B:USR1@300" in result.stdout
    assert "--gpus-per-node" not in "".join(line for line in result.stdout.splitlines() if line.startswith("#SBATCH"))


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (("trainer.devices=4", "--gpus-per-node", "2"), "trainer.devices=4 but the job would start 2 workers per node"),
        (("trainer.accelerator=gpu",), "trainer.accelerator=gpu needs GPUs: add --gpus-per-node N"),
        (("--nodes", "0"), "--nodes=0 must be at least 1"),
        (("--bogus",), "unrecognized argument '--bogus'"),
        # A newline would end the #SBATCH line and start a directive of its own.
        (("--partition", "gpu\n#SBATCH --uid=0"), "--partition='gpu\\n#SBATCH --uid=0' must be one word"),
        (("--job-name", "my job"), "must be one word without spaces or control characters"),
        (("--time", "tomorrow"), "--time='tomorrow' is not a SLURM time"),
        (("--gpus-per-node", "2", "--ntasks-per-node", "2"), "not both"),
        (("--nodes", "2", "trainer.num_nodes=3"), "trainer.num_nodes=3 but the job asks for --nodes 2"),
        (("--signal-grace", "999999"), "more than SLURM allows"),
        (("--time", "1:99:00"), "is not a SLURM time"),
        # The warning would come at once: every attempt requeued until the retry cap.
        (("--time", "2"), "--time=2 (120 s) is not longer than the warning before it (--signal-grace 120 s)"),
        (("--time", "0:30", "--signal-grace", "60"), "--time=0:30 (30 s) is not longer than the warning"),
        (("--time", "0-01", "--signal-grace", "3600"), "--time=0-01 (3600 s) is not longer"),
        (("generate.prompt=a\rb",), "holds a control character"),
        (("optim.lrr=1",), "optim.lr"),  # the usual recipe errors, with the closest key
    ],
)
def test_bad_slurm_requests_are_one_line_before_anything_is_submitted(main_cli, words, message) -> None:
    result = main_cli("slurm", "digits_cnn", *words, "--dry-run")

    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1 and not result.stdout


def test_requeue_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_config("digits_cnn", ["slurm.max_requeues=2"]).slurm
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert decide_requeue(settings, "SIGUSR1", "resume") is None  # not a SLURM job

    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert decide_requeue(settings, None, "resume") is None  # finished, not stopped
    assert decide_requeue(settings, "SIGINT", "resume") is None  # Ctrl-C: the user meant it
    assert decide_requeue(settings, "SIGUSR1", "resume").requeue
    term = decide_requeue(settings, "SIGTERM", "resume")
    assert not term.requeue and "slurm.requeue_on" in term.message  # scancel looks the same: by choice only
    assert decide_requeue(settings.model_copy(update={"requeue_on": ["SIGUSR1", "SIGTERM"]}), "SIGTERM", "r").requeue

    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    capped = decide_requeue(settings, "SIGUSR1", "`trainer fit digits_cnn resume=runs/x`")
    assert not capped.requeue
    assert "requeued 2 times, the retry cap (slurm.max_requeues=2)" in capped.message
    assert "resume=runs/x" in capped.message


def test_the_grace_checked_against_time_is_the_templates() -> None:
    assert f"#SBATCH --signal=B:USR1@{TEMPLATE_SIGNAL_GRACE_S}\n" in SCRIPT.read_text()
