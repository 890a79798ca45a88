"""A plot's cost stops growing with a run's length: long series are thinned to what a plot can show."""

from __future__ import annotations

import math

from trainer.report.plots import PLOTTED_POINTS, thinned
from trainer.report.run_files import Series


def test_a_long_series_keeps_its_ends_and_every_buckets_extremes() -> None:
    steps = list(range(1_000_000))
    values = [math.sin(step / 5000) for step in steps]
    values[123_457] = 50.0  # one spike among a million steps
    values[876_543] = -50.0
    line = thinned(Series(steps, values))
    assert len(line.steps) <= PLOTTED_POINTS
    assert line.steps == sorted(line.steps) and (line.steps[0], line.steps[-1]) == (0, 999_999)
    assert max(line.values) == 50.0 and min(line.values) == -50.0
    assert all(values[step] == value for step, value in zip(line.steps, line.values, strict=True))


def test_a_short_series_is_drawn_as_it_is() -> None:
    line = Series([0, 1, 2], [3.0, 1.0, 2.0])
    assert thinned(line) is line
