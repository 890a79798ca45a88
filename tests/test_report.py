"""`trainer report`, `trainer compare` and `trainer runs`, on real runs made once for the module."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from callbacks import SignalAt
from helpers import FAST, fit, one_error_line, snapshot
from PIL import Image

from trainer import api
from trainer.lifecycle.claim import RunClaim
from trainer.report.compare import overlay_figures
from trainer.report.plots import curve_figures
from trainer.report.report import write_report
from trainer.report.run_files import read_metrics
from trainer.report.runs import list_runs

# 12 training batches an epoch (of 41), small evaluation sets: each run takes seconds.
SMALL = (*FAST, "trainer.limit_train_batches=12", "data.max_eval_samples=96")
TEST_EXAMPLES = 96


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory: pytest.TempPathFactory, session_cache: Path) -> Path:
    """runs/digits_cnn/ with: `plain` (2 epochs, a validation at the end of each), `evals` (3 validations in
    one epoch), `resumed` (stopped by SIGTERM at step 5, resumed with a higher max_steps) and `stopped`
    (a copy of `resumed` as the signal left it)."""
    root = tmp_path_factory.mktemp("runs")
    runs = root / "digits_cnn"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TRAINER_CACHE", str(session_cache / "trainer"))
        env.setenv("HF_DATASETS_OFFLINE", "1")
        env.setenv("HF_HUB_OFFLINE", "1")
        fit("digits_cnn", *SMALL, "trainer.max_epochs=2", f"run_dir={runs / 'plain'}")
        fit("digits_cnn", *SMALL, "trainer.max_epochs=1", "trainer.val_check_interval=4", f"run_dir={runs / 'evals'}")
        config = api.resolve_fit_config("digits_cnn", [*SMALL, "trainer.max_steps=10", f"run_dir={runs / 'resumed'}"])
        assert api.fit(config, callbacks=[SignalAt(5)])["stopped_by"] == "SIGTERM"
        shutil.copytree(runs / "resumed", runs / "stopped")
        assert fit("digits_cnn", f"resume={runs / 'resumed'}", "trainer.max_steps=16")["global_step"] == 16
    return root


def _copy(run_dir: Path, tmp_path: Path, name: str | None = None) -> Path:
    copy = tmp_path / (name or run_dir.name)
    shutil.copytree(run_dir, copy)
    return copy


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


# ----------------------------------------------------------------------------- trainer report


def test_report_draws_the_curves_and_writes_the_markdown(main_cli, runs_root: Path, tmp_path: Path) -> None:
    run_dir = _copy(runs_root / "digits_cnn" / "plain", tmp_path)
    result = main_cli("report", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == f"{run_dir / 'report'}\n"

    report = run_dir / "report"
    stems = {"loss", "acc", "f1", "precision", "recall", "learning_rate", "throughput", "confusion_matrix"}
    assert {path.stem for path in report.glob("*.png")} == stems
    for png in report.glob("*.png"):
        with Image.open(png) as image:
            image.verify()
            assert image.format == "PNG" and image.size[0] >= 400 and image.size[1] >= 250, (png.name, image.size)

    text = (report / "report.md").read_text()
    summary = _summary(run_dir)
    for stage in ("val", "test"):
        for key, value in summary[stage].items():
            assert f"| {key} | {value:.4g} |" in text
    assert f"`checkpoints/{Path(summary['best_checkpoint']).name}`" in text
    assert "State: **finished**" in text and "wall time:" in text and "samples/s" in text
    for highlight in (
        "| task | image_classification |",
        "cnn: channels=[32, 64]",
        "adamw, lr=0.003",
        "| precision | 32 |",
    ):
        assert highlight in text
    assert all(f"]({stem}.png)" in text for stem in stems)

    # The confusion matrix is the best checkpoint's on the test split: the accuracy fit measured there.
    names, counts = _confusion_csv(report)
    assert names == [str(digit) for digit in range(10)]  # the ClassLabel's names
    assert sum(map(sum, counts)) == TEST_EXAMPLES
    accuracy = sum(counts[i][i] for i in range(10)) / TEST_EXAMPLES
    assert accuracy == pytest.approx(summary["test"]["test/acc"], abs=1e-5)


def _confusion_csv(report: Path) -> tuple[list[str], list[list[int]]]:
    with open(report / "confusion_matrix.csv", newline="") as file:
        header, *rows = list(csv.reader(file))
    return header[1:], [[int(cell) for cell in row[1:]] for row in rows]


def test_the_report_takes_the_fits_test_counts_for_that_checkpoint_and_evaluates_any_other(
    runs_root: Path, tmp_path: Path
) -> None:
    run_dir = _copy(runs_root / "digits_cnn" / "plain", tmp_path)
    saved_file = run_dir / "test_confusion.json"
    saved = json.loads(saved_file.read_text())
    best = run_dir / "checkpoints" / saved["checkpoint"]
    assert best.name == Path(_summary(run_dir)["best_checkpoint"]).name
    assert sum(map(sum, saved["matrix"])) == TEST_EXAMPLES

    # Counts that are not the model's, under the checkpoint's identity: the report shows them, so it read them.
    doctored = [row[1:] + row[:1] for row in saved["matrix"]]
    saved_file.write_text(json.dumps({**saved, "matrix": doctored}))
    assert _confusion_csv(write_report(run_dir))[1] == doctored
    # The checkpoint rewritten since (a newer modification time): the saved counts are not its; evaluated again.
    stat = best.stat()
    os.utime(best, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert _confusion_csv(write_report(run_dir))[1] == saved["matrix"]
    # A file that is not what fit writes counts as none.
    saved_file.write_text('{"matrix": "no"}')
    assert _confusion_csv(write_report(run_dir))[1] == saved["matrix"]


def test_a_new_report_replaces_the_old_one_whole(runs_root: Path, tmp_path: Path) -> None:
    run_dir = _copy(runs_root / "digits_cnn" / "evals", tmp_path)
    (run_dir / "report").mkdir()
    (run_dir / "report" / "stale.png").write_bytes(b"from an older report")
    assert write_report(run_dir) == run_dir / "report"
    assert not (run_dir / "report" / "stale.png").exists()
    assert (run_dir / "report" / "report.md").is_file()
    assert sorted(path.name for path in run_dir.iterdir() if path.name.startswith("report")) == ["report"]


def test_each_metric_has_its_curves(runs_root: Path) -> None:
    figures = curve_figures(read_metrics(runs_root / "digits_cnn" / "plain" / "metrics.csv"))
    lines = {stem: [len(axes.get_lines()) for axes in figure.axes] for stem, figure in figures.items()}
    assert lines["loss"] == lines["acc"] == [2]  # train and val
    assert lines["f1"] == [1]  # val only
    # The two param groups (with and without weight decay) follow one schedule: one line, both names.
    assert [line.get_label() for line in figures["learning_rate"].axes[0].get_lines()] == ["lr-AdamW (pg1, pg2)"]
    assert lines["throughput"] == [1]  # samples/s (no tokens, no MFU on a CPU)
    train, val = figures["loss"].axes[0].get_lines()
    assert list(train.get_xdata()) == list(range(24))  # 2 epochs of 12 steps, each logged
    assert list(val.get_xdata()) == [11, 23]  # the end of each epoch


def test_several_evaluations_in_an_epoch_are_all_plotted(runs_root: Path) -> None:
    run_dir = runs_root / "digits_cnn" / "evals"
    with open(run_dir / "metrics.csv", newline="") as file:
        logged = [int(row["step"]) for row in csv.DictReader(file) if row["val/loss"]]
    assert logged == [3, 7, 11]
    val_loss = curve_figures(read_metrics(run_dir / "metrics.csv"))["loss"].axes[0].get_lines()[1]
    assert val_loss.get_label() == "val/loss" and list(val_loss.get_xdata()) == logged


def test_a_resumed_run_has_one_continuous_curve(runs_root: Path) -> None:
    run_dir = runs_root / "digits_cnn" / "resumed"
    with open(run_dir / "metrics.csv", newline="") as file:
        logged = [int(row["step"]) for row in csv.DictReader(file) if row["train/loss"]]
    assert logged == list(range(16))  # both sessions in one file: steps 0-4, then 5-15 after the resume
    train_loss = curve_figures(read_metrics(run_dir / "metrics.csv"))["loss"].axes[0].get_lines()[0]
    assert list(train_loss.get_xdata()) == list(range(16))


def test_steps_logged_again_after_a_resume_keep_the_newest_values(tmp_path: Path) -> None:
    """A run killed after its last checkpoint logs those steps again when resumed: one value per step, the new one."""
    metrics = tmp_path / "metrics.csv"
    metrics.write_text(
        "step,train/loss,val/loss\n0,2.0,\n1,1.9,\n2,1.8,\n2,,1.7\n3,1.75,\n"  # killed after step 3
        "2,1.6,\n2,,1.5\n3,1.4,\n4,1.3,\n5,1.2"  # resumed from the checkpoint at step 2; the last row cut short
    )
    log = read_metrics(metrics)
    assert log["train/loss"].steps == [0, 1, 2, 3, 4, 5]
    assert log["train/loss"].values == [2.0, 1.9, 1.6, 1.4, 1.3, 1.2]
    assert log["val/loss"].steps == [2] and log["val/loss"].values == [1.5]


# ----------------------------------------------------------------------------- trainer compare


def test_compare_overlays_the_runs_and_tabulates_them(main_cli, runs_root: Path, tmp_path: Path) -> None:
    plain, evals = runs_root / "digits_cnn" / "plain", runs_root / "digits_cnn" / "evals"
    out = tmp_path / "cmp"
    result = main_cli("compare", str(plain), str(evals), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == f"{out}\n"
    assert {path.name for path in out.iterdir()} == {"compare.md", "train_loss.png", "val_loss.png", "val_acc.png"}
    for png in out.glob("*.png"):
        with Image.open(png) as image:
            assert image.format == "PNG" and image.size[0] >= 400

    logs = {"plain": read_metrics(plain / "metrics.csv"), "evals": read_metrics(evals / "metrics.csv")}
    figures = overlay_figures(logs, ["val/acc", "val/acc"])
    assert {stem: [line.get_label() for line in figure.axes[0].get_lines()] for stem, figure in figures.items()} == {
        stem: ["plain", "evals"] for stem in ("train_loss", "val_loss", "val_acc")
    }

    text = (out / "compare.md").read_text()
    table = [line for line in text.split("## Settings")[0].splitlines() if line.startswith("| ")]
    assert "| run | recipe | state | steps | best monitored | val/acc |" in table[0]
    for row, run_dir in zip(table[2:], (plain, evals), strict=True):
        summary = _summary(run_dir)
        # Each run by its recipe and run name, not by a timestamp alone.
        assert row.startswith(f"| digits_cnn/{run_dir.name} | digits_cnn | finished | {summary['global_step']} | ")
        assert f"| {summary['val']['val/acc']:.4g} |" in row
    # ... and the settings they differ in (evals validated 3 times an epoch, plain trained 2 epochs).
    settings = [line for line in text.split("## Settings that differ")[1].split("## Curves")[0].splitlines()
                if line.startswith("| ")]  # fmt: skip
    assert settings[0] == "| setting | digits_cnn/plain | digits_cnn/evals |"
    assert "| trainer.max_epochs | 2 | 1 |" in settings and "| trainer.val_check_interval | null | 4 |" in settings
    assert not any(line.startswith("| run_dir") for line in settings)  # where a run is: no setting

    # Again into the same folder: the previous comparison is replaced, not mixed with the new one.
    (out / "stale.png").write_bytes(b"old")
    assert main_cli("compare", str(plain), str(evals), "--out", str(out)).returncode == 0
    assert not (out / "stale.png").exists()


# ----------------------------------------------------------------------------- trainer runs


def test_runs_lists_each_run_with_its_state(cli, main_cli, runs_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    shutil.copytree(runs_root, root)
    runs = root / "digits_cnn"
    stopped = runs / "stopped"
    # A run killed without a summary (kill -9, out of memory), and one held by a live process.
    failed = runs / "failed"
    failed.mkdir()
    shutil.copy(stopped / "config.yaml", failed)
    shutil.copy(stopped / "metrics.csv", failed)
    running = runs / "running"
    running.mkdir()
    shutil.copy(stopped / "config.yaml", running)
    # A SLURM job stopped by its warning signal and requeued; a default-named run (its name is when it began).
    requeued = shutil.copytree(stopped, runs / "requeued")
    summary = {**_summary(stopped), "stopped_by": "SIGUSR1", "requeued": True}
    (requeued / "summary.json").write_text(json.dumps(summary))
    shutil.copytree(runs / "plain", runs / "20200101-000000")
    shutil.copytree(runs / "plain", root / "named")  # run_dir=runs/named: a run right under the root

    claim = RunClaim.existing(running)  # this process holds the run, as a training rank 0 does
    try:
        result = cli("runs", "--root", str(root))  # and another process looks
    finally:
        claim.release()
    assert result.returncode == 0, result.stderr[-3000:]
    lines = _columns(result.stdout)
    assert list(lines[0]) == ["recipe", "run", "state", "steps", "best", "wall time"]
    assert lines[0]["run"] == str(runs / "20200101-000000")  # the oldest first
    found = {Path(line["run"]).name: line for line in lines}
    assert set(found) == {
        "plain", "evals", "resumed", "stopped", "failed", "running", "requeued", "20200101-000000", "named"
    }  # fmt: skip
    for name in ("plain", "evals", "resumed", "20200101-000000", "named"):
        summary = _summary(runs / name if name != "named" else root / name)
        assert found[name]["state"] == "finished" and found[name]["steps"] == str(summary["global_step"])
        assert found[name]["recipe"] == "digits_cnn" and found[name]["wall time"].endswith(" s")
    assert (found["stopped"]["state"], found["stopped"]["steps"]) == ("stopped at step 5", "5")
    assert found["requeued"]["state"] == "stopped at step 5, requeued"
    assert found["failed"]["state"] == "failed" and found["failed"]["steps"] == "5"  # steps 0-4 logged
    assert found["running"]["state"] == "running" and found["running"]["best"] == "-"
    # Both validations of `plain` saved a checkpoint: the best is the better of the two.
    best = read_metrics(runs / "plain" / "metrics.csv")["val/acc"].best("max")
    assert found["plain"]["best"] == f"val/acc={best:.4g}"

    only = main_cli("runs", "digits_cnn", "--root", str(root))
    assert only.returncode == 0 and len(_columns(only.stdout)) == len(lines)
    other = main_cli("runs", "mnist_cnn", "--root", str(root))
    assert other.returncode == 0 and other.stdout.startswith("no runs of recipe 'mnist_cnn' under ")


def _columns(table: str) -> list[dict[str, str]]:
    """`trainer runs`' lines as {column: cell}, cut where the header's columns begin."""
    header, *lines = table.splitlines()
    names = [name.strip() for name in header.split("  ") if name.strip()]
    starts = [header.index(name) for name in names]
    return [
        {name: line[start:end].strip() for name, start, end in zip(names, starts, [*starts[1:], None], strict=True)}
        for line in lines
    ]


def test_a_resume_that_died_leaves_a_failed_run(runs_root: Path, tmp_path: Path) -> None:
    """summary.json is the stopped session's, but metrics.csv goes on past its step: the resume never ended."""
    run_dir = _copy(runs_root / "digits_cnn" / "stopped", tmp_path / "runs" / "digits_cnn")
    with open(run_dir / "metrics.csv", newline="") as file:
        columns = csv.DictReader(file).fieldnames
    with open(run_dir / "metrics.csv", "a", newline="") as file:
        csv.DictWriter(file, fieldnames=columns).writerow({"step": 7, "train/loss": 1.5})
    (line,) = list_runs(tmp_path / "runs")
    assert line.state == "failed"


def test_runs_reads_files_alone_and_answers_at_once(runs_root: Path) -> None:
    check = (
        "import sys; from trainer.cli import main; status = main(['runs', '--root', sys.argv[1]]); "
        "heavy = [m for m in ('torch', 'lightning', 'matplotlib', 'datasets') if m in sys.modules]; "
        "assert status == 0 and not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", check, str(runs_root)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "stopped at step 5" in result.stdout
    started = time.perf_counter()
    assert len(list_runs(runs_root)) == 4
    assert time.perf_counter() - started < 0.5


def test_runs_under_an_empty_or_missing_root(main_cli, tmp_path: Path) -> None:
    result = main_cli("runs")  # no ./runs here
    assert result.returncode == 0 and result.stdout.startswith("no runs under runs/ ") and not result.stderr
    (tmp_path / "empty").mkdir()
    result = main_cli("runs", "--root", "empty")
    assert result.returncode == 0 and result.stdout.startswith("no runs under empty/ ")
    assert "--root 'missing' does not exist" in one_error_line(main_cli("runs", "--root", "missing"))


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["report", "nowhere"], "run directory 'nowhere' does not exist"),
        (["report", "not_a_run"], "'not_a_run' is not a run directory (no config.yaml)"),
        (["report", "no_metrics"], "has no metrics yet"),
        (["report", "header_only"], "has no metrics yet"),
        (["compare"], "the following arguments are required: run_dir"),
        (["compare", "RUN"], "needs two or more run directories, got 1"),
        (["compare", "RUN", "nowhere"], "run directory 'nowhere' does not exist"),
        (["compare", "RUN", "no_metrics"], "has no metrics yet"),
        (["compare", "RUN", "RUN"], "is the same run as"),
        (["compare", "RUN", "RUN_COPY", "--out", "not_a_run"], "holds files compare did not write (notes.txt)"),
        (["compare", "RUN", "RUN_COPY", "--out", "notes"], "holds files compare did not write (thesis.txt)"),
        (["compare", "RUN", "RUN_COPY", "--out", "my_compare"], "holds files but no compare.md written by compare"),
        (["compare", "RUN", "export"], "'export' is an export folder (it has manifest.json), not a run directory"),
        (["compare", "RUN", "no_step"], "has no 'step' column"),
        (["report", "no_step"], "has no 'step' column"),
        (["report", "long_field"], "metrics.csv' is damaged and cannot be read as CSV (field larger than"),
        (["compare", "RUN", "long_field"], "metrics.csv' is damaged and cannot be read as CSV"),
        (["report", "bad_config"], "the run's saved config.yaml"),
        (["report", "foreign_report"], "holds files `trainer report` did not write (notes.txt)"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    main_cli, runs_root: Path, tmp_path: Path, words: list[str], expected: str
) -> None:
    run_dir = _copy(runs_root / "digits_cnn" / "plain", tmp_path, "run")
    _copy(run_dir, tmp_path, "run_copy")
    (tmp_path / "not_a_run").mkdir()
    (tmp_path / "not_a_run" / "notes.txt").write_text("mine")
    for name in ("no_metrics", "header_only"):
        (tmp_path / name).mkdir()
        shutil.copy(run_dir / "config.yaml", tmp_path / name)
    (tmp_path / "header_only" / "metrics.csv").write_text("step,train/loss\n")
    # A folder of someone's notes with a compare.md among them, and one whose compare.md alone is theirs.
    for name, files in (("notes", ("compare.md", "thesis.txt")), ("my_compare", ("compare.md",))):
        (tmp_path / name).mkdir()
        for file in files:
            (tmp_path / name / file).write_text("# my notes\n")
    (tmp_path / "export").mkdir()
    shutil.copy(run_dir / "config.yaml", tmp_path / "export")
    (tmp_path / "export" / "manifest.json").write_text("{}")
    for name in ("no_step", "long_field", "bad_config", "foreign_report"):
        _copy(run_dir, tmp_path, name)
    (tmp_path / "no_step" / "metrics.csv").write_text("epoch,train/loss\n0,1.5\n")
    with open(tmp_path / "long_field" / "metrics.csv", "a") as file:
        file.write("1," + "9" * 200_000 + "\n")
    (tmp_path / "bad_config" / "config.yaml").write_text("data: [unclosed\n")
    (tmp_path / "foreign_report" / "report").mkdir()
    (tmp_path / "foreign_report" / "report" / "report.md").write_text("old report")
    (tmp_path / "foreign_report" / "report" / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    words = [{"RUN": "run", "RUN_COPY": "run_copy"}.get(word, word) for word in words]
    assert expected in one_error_line(main_cli(*words))
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- damaged and unusual input


def test_compare_into_the_current_folder_and_through_a_link(main_cli, runs_root: Path, tmp_path: Path) -> None:
    plain, evals = str(runs_root / "digits_cnn" / "plain"), str(runs_root / "digits_cnn" / "evals")
    here = tmp_path / "here"
    here.mkdir()
    for _ in range(2):  # new (empty), then a previous comparison, replaced in place: the shell's folder stays
        result = main_cli("compare", plain, evals, "--out", ".", cwd=here)
        assert result.returncode == 0 and result.stdout == ".\n", result.stderr[-3000:]
        assert {path.name for path in here.iterdir()} == {"compare.md", "train_loss.png", "val_loss.png", "val_acc.png"}
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    assert main_cli("compare", plain, evals, "--out", str(tmp_path / "link")).returncode == 0
    assert (tmp_path / "link").is_symlink() and (real / "compare.md").is_file()


def test_damaged_files_never_stop_runs_nor_lose_a_run(main_cli, runs_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    plain = runs_root / "digits_cnn" / "plain"
    bad = {
        "undecodable": ("metrics.csv", None),
        "long_field": ("metrics.csv", None),
        "step_text": ("summary.json", {"global_step": "abc", "val": [1, 2], "wall_seconds": "x"}),
        "step_null": ("summary.json", {"global_step": None, "best_checkpoint": 5, "stopped_by": "SIGTERM"}),
        "summary_list": ("summary.json", [1, 2]),
        "checkpoint_foo": ("config.yaml", "checkpoint: foo\nname: [1]\n"),
        "20241399-999999": (None, None),
    }
    for name, (file, content) in bad.items():
        run_dir = shutil.copytree(plain, root / "digits_cnn" / name)
        if file == "summary.json":
            (run_dir / file).write_text(json.dumps(content))
        elif file == "config.yaml":
            (run_dir / file).write_text(content)
    with open(root / "digits_cnn" / "undecodable" / "metrics.csv", "ab") as file:
        file.write(b"\xff\xfe\n")
    with open(root / "digits_cnn" / "long_field" / "metrics.csv", "a") as file:
        file.write("1," + "9" * 200_000 + "\n")

    result = main_cli("runs", "--root", str(root))
    assert result.returncode == 0 and not result.stderr, result.stderr[-3000:]
    found = {Path(line["run"]).name: line for line in _columns(result.stdout)}
    assert set(found) == set(bad)
    # A finished run's best value comes from its summary: its metrics.csv is not read (`report` names the damage).
    assert found["long_field"]["state"] == "finished" and found["long_field"]["best"].startswith("val/acc=")
    (root / "digits_cnn" / "long_field" / "summary.json").unlink()  # unfinished: then metrics.csv is read
    found = {Path(line["run"]).name: line for line in _columns(main_cli("runs", "--root", str(root)).stdout)}
    assert found["long_field"]["state"] == "failed, damaged (metrics.csv unreadable)"
    assert found["undecodable"]["state"] == "finished" and found["undecodable"]["best"].startswith("val/acc=")
    assert found["step_text"]["state"] == "finished" and found["step_text"]["steps"] == "-"
    assert found["step_text"]["wall time"] == "-"
    assert found["step_null"]["state"] == "stopped"
    assert found["summary_list"]["state"] == "failed"  # summary.json is no summary: as if none was written
    assert found["checkpoint_foo"]["recipe"] == "digits_cnn" and found["checkpoint_foo"]["best"].startswith("val/loss=")

    # compare reads the same files: undecodable bytes and wrong types leave out what they would have told.
    runs = root / "digits_cnn"
    result = main_cli("compare", str(runs / "undecodable"), str(runs / "step_text"), "--out", str(tmp_path / "cmp"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| digits_cnn/step_text | digits_cnn | finished | - |" in (tmp_path / "cmp" / "compare.md").read_text()


def test_report_reads_a_summary_of_the_wrong_types(runs_root: Path, tmp_path: Path, monkeypatch) -> None:
    from trainer.report import report

    monkeypatch.setattr(report, "_confusion", lambda run, cfg, summary: (None, None))  # the slow part, not tested
    run_dir = _copy(runs_root / "digits_cnn" / "plain", tmp_path)
    (run_dir / "summary.json").write_text(json.dumps({"global_step": "abc", "val": [1, 2], "epochs": 1, "mfu": "x"}))
    text = (write_report(run_dir) / "report.md").read_text()
    assert "State: **finished**" in text and "(1 epoch)" in text and "test: the best checkpoint" not in text
    assert "=None" not in text and "test: split 'test' (with the best checkpoint)" in text  # metrics.csv has them
    assert "train: split 'train'; val: the data set's 'validation' split, or a held-out 10% of train" in text
    # A finished run without test metrics (Tiny Shakespeare has no test split) says so, not "test: test".
    cfg = report.load_config_file(run_dir / "config.yaml")
    (data,) = [value for setting, value in report._highlights(cfg, None, False, True) if setting == "data"]
    assert data.endswith("test: none (the data set has no 'test' split)")
    assert report._final_metrics({"val": {"val/loss": 1.0}, "test": {}}, read_metrics(run_dir / "metrics.csv"))[0] == (
        "val: the final weights (summary.json).\n"
    )
