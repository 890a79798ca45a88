"""`trainer compare RUN_DIR RUN_DIR...`: the runs' curves overlaid, one plot per metric they share, and one
table of what each run reached. No torch: metrics.csv, summary.json and config.yaml hold it all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from trainer.errors import UserError
from trainer.report.output import duration, foreign_entries, number, replace_folder, table
from trainer.report.plots import curve_figure, save_png
from trainer.report.run_files import MetricLog, RunFiles, best_monitored
from trainer.report.runs import run_state

DEFAULT_OUT = Path("compare")
COMPARE_FILE = "compare.md"
TITLE = "# Comparison of "  # compare.md's first line: `# Comparison of 3 runs`
ALWAYS = ("train/loss", "val/loss")  # compared whenever every run logged them; then each run's monitor, val/acc


def write_comparison(paths: list[str], out: Path | None = None) -> Path:
    """Write the overlays (`<metric>.png`) and compare.md into `out` (default ./compare), replacing a previous
    comparison there, and return the folder. Bad input is a UserError before anything is written."""
    if len(paths) < 2:
        given = f"got {len(paths)}"
        raise UserError(f"`trainer compare` needs two or more run directories, {given}; give RUN_DIR RUN_DIR...")
    runs = [RunFiles.open(path, "compare") for path in paths]
    seen: dict[Path, str] = {}
    for run, path in zip(runs, paths, strict=True):
        if run.path.resolve() in seen:
            raise UserError(f"{path!r} is the same run as {seen[run.path.resolve()]!r}; give each run once")
        seen[run.path.resolve()] = path
    logs = [run.metrics("compare") for run in runs]
    given = out if out is not None else DEFAULT_OUT
    target = _check_out(given)

    labels = _labels(runs)
    monitors = [run.monitor() for run in runs]
    figures = overlay_figures(dict(zip(labels, logs, strict=True)), [monitor for monitor, _ in monitors])
    rows = [_row(*four) for four in zip(labels, runs, logs, monitors, strict=True)]
    text = _markdown(paths, rows, list(figures), differing_settings(labels, runs))

    def fill(folder: Path) -> None:
        for stem, figure in figures.items():
            save_png(figure, folder / f"{stem}.png")
        (folder / COMPARE_FILE).write_text(text)

    replace_folder(target, fill)
    return given


def overlay_figures(logs: dict[str, MetricLog], monitors: list[str]) -> dict[str, Figure]:
    """One figure per metric every run logged (train/loss, val/loss, the runs' monitors, val/acc), by file stem,
    with a line per run."""
    candidates = dict.fromkeys([*ALWAYS, *monitors, "val/acc"])
    shared = [metric for metric in candidates if all(metric in log for log in logs.values())]
    return {
        metric.replace("/", "_"): curve_figure(metric, {label: log[metric] for label, log in logs.items()})
        for metric in shared
    }


def _check_out(given: Path) -> Path:
    """The output folder, resolved (`.`, links: the folder they lead to), checked to be new, empty, or a previous
    comparison (which is replaced): never someone's files. A previous comparison holds compare.md, whose first
    line is compare's title, and .png files, and nothing else (no folder, no link, no other name)."""
    try:
        target = given.expanduser().resolve()
    except (OSError, RuntimeError) as err:  # a loop of links
        problem = f"--out {str(given)!r} cannot be resolved ({err})"
        raise UserError(f"{problem}; give a folder (new, or a previous comparison)") from None
    if target.exists() and not target.is_dir():
        raise UserError(f"--out {str(given)!r} is a file; give a folder (new, or a previous comparison)")
    if not target.is_dir():
        return target
    foreign = foreign_entries(target, _written_by_compare)
    if foreign or (any(target.iterdir()) and not _is_comparison(target / COMPARE_FILE)):
        what = f"holds files compare did not write ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''})"
        if not foreign:
            what = f"holds files but no {COMPARE_FILE} written by compare"
        raise UserError(
            f"--out {str(given)!r} {what}; it is not a previous comparison, which alone is replaced: give a new or "
            "empty folder"
        )
    return target


def _written_by_compare(path: Path) -> bool:
    """A file name compare writes: compare.md (checked to be compare's by _is_comparison) or a `<metric>.png`."""
    return path.name == COMPARE_FILE or path.suffix == ".png"


def _is_comparison(path: Path) -> bool:
    """compare.md as compare writes it: a plain file whose first line is `# Comparison of N runs`."""
    if not path.is_file() or path.is_symlink():
        return False
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            first = file.readline(200)
    except OSError:
        return False
    return first.startswith(TITLE)


def _labels(runs: list[RunFiles]) -> list[str]:
    """Each run by its recipe and its run folder's name (`digits_cnn/20260101-120000`, `imdb_lstm/big`); where
    that does not tell them apart, the shortest tail of their paths that does."""
    named = [f"{_recipe(run) or run.path.parent.name}/{run.path.name}" for run in runs]
    if len(set(named)) == len(named):
        return named
    paths = [run.path for run in runs]
    for depth in range(1, max(len(path.parts) for path in paths) + 1):
        tails = ["/".join(path.parts[-depth:]) for path in paths]
        if len(set(tails)) == len(tails):
            return tails
    return [str(path.resolve()) for path in paths]


def _recipe(run: RunFiles) -> str | None:
    try:
        return run.recipe()
    except UserError:  # a damaged config.yaml: the run is still compared by what else it holds
        return None


# Where a run is, not how it trained: never a difference worth a row.
NOT_SETTINGS = ("run_dir", "resume", "overwrite", "ckpt", "description")


def differing_settings(labels: list[str], runs: list[RunFiles]) -> list[list[str]]:
    """The settings (dotted keys of config.yaml) whose values differ between the runs: [key, value per run]."""
    flat = []
    for run in runs:
        try:
            flat.append(_flatten(run.config()))
        except UserError:
            flat.append({})
    keys = sorted({key for settings in flat for key in settings})
    rows = []
    for key in keys:
        values = [settings.get(key, "-") for settings in flat]
        if key.split(".")[0] not in NOT_SETTINGS and len({repr(value) for value in values}) > 1:
            rows.append([key, *(_as_in_yaml(value) for value in values)])
    return rows


def _as_in_yaml(value: Any) -> str:
    """A setting as config.yaml spells it: null, true, false, 3e-3, [8, 16]."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return str(value)


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _row(label: str, run: RunFiles, log: MetricLog, monitor: tuple[str, str]) -> dict[str, Any]:
    summary = run.summary()
    state, current = run_state(run, summary)
    summary = summary if current else None
    name, mode = monitor
    if summary is not None:
        final = dict(summary.get("val") or {})
        steps = summary.get("global_step")
    else:  # a run still training, or one that did not end: what it has logged
        final = {key: log[key].last() for key in log if key.startswith("val/")}
        last = log.last_step()
        steps = last + 1 if last is not None else None
    best = best_monitored(log, name, mode, run.best_checkpoint(summary))
    return {
        "label": label,
        "recipe": run.recipe() or "-",
        "state": state,
        "steps": steps,
        "best": f"{name} {number(best)} ({mode})" if best is not None else "-",
        "final": final,
        "wall": (summary or {}).get("wall_seconds"),
        "samples": (summary or {}).get("samples_per_second"),
    }


def _markdown(paths: list[str], rows: list[dict[str, Any]], stems: list[str], settings: list[list[str]]) -> str:
    finals = list(dict.fromkeys(key for row in rows for key in sorted(row["final"])))
    header = ["run", "recipe", "state", "steps", "best monitored", *finals, "wall time", "samples/s"]
    cells = [
        [
            row["label"],
            row["recipe"],
            row["state"],
            number(row["steps"]),
            row["best"],
            *(number(row["final"].get(key)) for key in finals),
            duration(row["wall"]),
            number(row["samples"]),
        ]
        for row in rows
    ]
    runs = "\n".join(f"- {row['label']}: `{path}`" for row, path in zip(rows, paths, strict=True))
    plots = "".join(f"![{stem}]({stem}.png)\n" for stem in stems) or "No metric is logged by every run.\n"
    labels = [row["label"] for row in rows]
    differ = table(["setting", *labels], settings) if settings else "None: the runs share every setting.\n"
    return (
        f"{TITLE}{len(rows)} runs\n\n{runs}\n\n"
        "Final val metrics are the final weights' (summary.json; the last logged values for a run without one); "
        "wall time and samples/s are the last session's.\n\n"
        f"{table(header, cells)}\n## Settings that differ\n\n{differ}\n## Curves\n\n{plots}"
    )
