"""Sparklines: the shape of a metric's history in one line of text."""

from __future__ import annotations

import math

from treadle.cli.common import sparkline


def test_a_falling_curve_falls() -> None:
    line = sparkline([1.0, 0.5, 0.25, 0.125, 0.0])
    assert line[0] == "█" and line[-1] == "▁"
    assert list(line) == sorted(line, reverse=True)


def test_long_histories_are_bucketed_to_the_width_and_keep_the_last_value() -> None:
    values = [float(i) for i in range(1000)]
    line = sparkline(values, width=40)
    assert len(line) == 40
    assert line[-1] == "█" and line[0] == "▁"


def test_nothing_to_draw_for_fewer_than_two_finite_values() -> None:
    assert sparkline([]) == ""
    assert sparkline([3.0]) == ""
    assert sparkline([math.nan, 1.0, math.inf]) == ""


def test_a_flat_line_is_drawn_flat() -> None:
    assert set(sparkline([2.0] * 10)) == {"▁"}
