"""The figures of `trainer report` and `trainer compare`, as matplotlib Figures (tests count their lines).

Figures are made with matplotlib's object API (`Figure`, saved through the Agg canvas), never pyplot: no
display is ever opened, whatever the MPLBACKEND or the machine, no figure is left in pyplot's global
registry, and a program that imports this module (a notebook with its own backend) keeps its backend.
"""

from __future__ import annotations

import re
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from trainer.report.run_files import MetricLog, Series

# Throughput columns of metrics.csv (trainer.lifecycle.throughput), one panel each where logged. FLOPs per
# second is left out: MFU is the same curve, scaled by the peak, where the peak is known.
THROUGHPUT = {"train/samples_per_second": "samples/s", "train/tokens_per_second": "tokens/s", "train/mfu": "MFU"}
NOT_CURVES = {"epoch", "train/flops_per_second", *THROUGHPUT}
STAGES = ("train/", "val/")  # test metrics are one value at the end: report.md's table holds them
LR_PREFIX = "lr-"  # Lightning's LearningRateMonitor: lr-AdamW/pg1, lr-AdamW/pg2 (one per param group)
MARKERS_UP_TO = 40  # points: a series this short (validations) shows each point
PLOTTED_POINTS = 4000  # at most, per line: a 7-inch plot at 100 dpi has 700 columns of pixels
DPI = 100


def metric_groups(log: MetricLog) -> dict[str, list[str]]:
    """The train and val metrics by name, loss first: {"loss": ["train/loss", "val/loss"], "acc": ["val/acc"]}."""
    groups: dict[str, list[str]] = {}
    for key in sorted(log, key=lambda k: (not k.endswith("/loss"), k.split("/", 1)[-1], k)):
        if key.startswith(STAGES) and key not in NOT_CURVES:
            groups.setdefault(key.split("/", 1)[1], []).append(key)
    return groups


def curve_figures(log: MetricLog) -> dict[str, Figure]:
    """The report's curves, by file stem: one figure per metric (train and val together), the learning
    rate of each param group, and throughput."""
    groups = metric_groups(log)
    figures = {_stem(name): curve_figure(name, {key: log[key] for key in keys}) for name, keys in groups.items()}
    rates = [key for key in log if key.startswith(LR_PREFIX)]
    if rates:
        figures["learning_rate"] = curve_figure(
            "learning rate", coinciding_drawn_once({key: log[key] for key in rates})
        )
    panels = {label: log[key] for key, label in THROUGHPUT.items() if key in log}
    if panels:
        figures["throughput"] = throughput_figure(panels)
    return figures


def coinciding_drawn_once(series: dict[str, Series]) -> dict[str, Series]:
    """Series with the same points become one line, labelled by all their names: Lightning logs a learning
    rate per param group (with and without weight decay), equal unless a schedule sets them apart."""
    same: dict[tuple[tuple[int, ...], tuple[float, ...]], list[str]] = {}
    for label, line in series.items():
        same.setdefault((tuple(line.steps), tuple(line.values)), []).append(label)
    return {_joint_label(labels): series[labels[0]] for labels in same.values()}


def _joint_label(labels: list[str]) -> str:
    """`lr-AdamW/pg1`, `lr-AdamW/pg2` -> `lr-AdamW (pg1, pg2)`."""
    if len(labels) == 1:
        return labels[0]
    heads = {label.rsplit("/", 1)[0] for label in labels}
    if len(heads) == 1 and all("/" in label for label in labels):
        return f"{heads.pop()} ({', '.join(label.rsplit('/', 1)[1] for label in labels)})"
    return ", ".join(labels)


def thinned(line: Series, most: int = PLOTTED_POINTS) -> Series:
    """At most `most` points, drawn as the full series would be: each bucket of consecutive steps keeps its
    lowest and highest value, in step order (spikes stay visible). A plot's cost then stops growing with a
    run's length: a million-step metrics.csv draws as fast as a ten-thousand-step one."""
    if len(line.steps) <= most:
        return line
    count = len(line.steps)
    size = -(-2 * count // (most - 2))  # two points per bucket, and the first and last points
    kept = {0, count - 1}
    for start in range(0, count, size):
        bucket = range(start, min(start + size, count))
        kept |= {min(bucket, key=line.values.__getitem__), max(bucket, key=line.values.__getitem__)}
    return Series([line.steps[i] for i in sorted(kept)], [line.values[i] for i in sorted(kept)])


def curve_figure(title: str, series: dict[str, Series]) -> Figure:
    """One line per series, against the step; lines that coincide (param groups) stay visible by their style."""
    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.add_subplot()
    for index, (label, line) in enumerate(series.items()):
        line = thinned(line)
        axes.plot(
            line.steps,
            line.values,
            label=label,
            linestyle=("-", "--", ":", "-.")[index % 4],
            marker="o" if len(line.steps) <= MARKERS_UP_TO else None,
            markersize=3,
        )
    axes.set(title=title, xlabel="step", ylabel=title)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    axes.legend(loc="best")  # where it covers the fewest points (the last ones are the ones read)
    return figure


def throughput_figure(panels: dict[str, Series]) -> Figure:
    """One panel per throughput figure (their scales differ by orders of magnitude), sharing the step axis."""
    figure = Figure(figsize=(7, 2.5 * len(panels) + 0.5), layout="constrained")
    axes_list = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for axes, (label, line) in zip(axes_list, panels.items(), strict=True):
        line = thinned(line)
        axes.plot(line.steps, line.values, marker="o" if len(line.steps) <= MARKERS_UP_TO else None, markersize=3)
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
    axes_list[0].set_title("throughput (since the previous logging step)")
    axes_list[-1].set_xlabel("step")
    axes_list[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    return figure


def confusion_figure(matrix: list[list[int]], names: list[str], title: str) -> Figure:
    """Counts of true (rows) against predicted (columns) classes; numbers in the cells when they fit."""
    classes = len(names)
    side = min(16.0, max(4.5, 0.45 * classes + 2.5))
    figure = Figure(figsize=(side + 1, side), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, shrink=0.8)
    axes.set(title=title, xlabel="predicted", ylabel="true")
    if classes <= 40:
        axes.set_xticks(range(classes), names, rotation=90 if max(map(len, names)) > 3 else 0)
        axes.set_yticks(range(classes), names)
    if classes <= 20:
        top = max(max(row) for row in matrix) or 1
        for true, row in enumerate(matrix):
            for predicted, count in enumerate(row):
                colour = "white" if count > top / 2 else "black"
                axes.text(predicted, true, str(count), ha="center", va="center", color=colour, fontsize=8)
    return figure


def save_png(figure: Figure, path: Path) -> None:
    FigureCanvasAgg(figure)  # Agg draws in memory: no display, whatever the backend
    figure.savefig(path, dpi=DPI)


def _stem(name: str) -> str:
    """A metric name as a file name: `val/acc` -> `val_acc`."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
