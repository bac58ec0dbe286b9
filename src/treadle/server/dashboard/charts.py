"""Plotly figures as plain JSON-able dicts (the page's plotly.js draws them).

No plotly Python import: a figure is a dict of traces and a layout, built here from
records, and handed to the template, which embeds it with `tojson`.

Every chart is drawn as SVG: plotly's WebGL traces (parcoords, scattergl) compile code
at run time, which the dashboard's Content-Security-Policy forbids. plotly.js reads a few
HTML tags in labels, so every string that comes from a user (run names, metric, param
and feature names) goes through `plain`, whose entities plotly shows as the characters.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04")
LOW, HIGH = (68, 1, 84), (253, 231, 37)
"""The ends of the colour ramp of a parallel-coordinates plot (dark purple to yellow)."""


def plain(text: Any) -> str:
    """A label plotly shows as the text it is, tags and all."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _layout(title: str, x: str = "", y: str = "", **extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "title": {"text": plain(title), "font": {"size": 14}},
        "margin": {"l": 50, "r": 20, "t": 40, "b": 40},
        "height": 280,
        "xaxis": {"title": {"text": plain(x)}, "automargin": True},
        "yaxis": {"title": {"text": plain(y)}, "automargin": True},
        "legend": {"orientation": "h"},
        "paper_bgcolor": "rgba(0,0,0,0)",
    }
    layout.update(extra)
    return layout


def stamp(at: float) -> str:
    return dt.datetime.fromtimestamp(at).isoformat(timespec="seconds")


def lines(
    title: str,
    series: Mapping[str, tuple[Sequence[Any], Sequence[Any]]],
    x: str = "step",
    y: str = "",
    markers: bool = True,
    hover: Sequence[str] | None = None,
) -> dict[str, Any]:
    """One line per named series of (xs, ys); `hover` labels the points (every series
    shares the xs then)."""
    traces = []
    for i, (name, (xs, ys)) in enumerate(series.items()):
        trace: dict[str, Any] = {
            "type": "scatter",
            "mode": "lines+markers" if markers else "lines",
            "name": plain(name),
            "x": list(xs),
            "y": list(ys),
            "line": {"color": PALETTE[i % len(PALETTE)]},
        }
        if hover is not None:
            trace["text"] = list(hover)
        traces.append(trace)
    return {"data": traces, "layout": _layout(title, x, y)}


def grouped_bars(
    title: str, categories: Sequence[str], series: Mapping[str, Sequence[float | None]]
) -> dict[str, Any]:
    """A bar per series in each category (e.g. a bar per run for each metric)."""
    traces = [
        {
            "type": "bar",
            "name": plain(name),
            "x": [plain(c) for c in categories],
            "y": list(values),
            "marker": {"color": PALETTE[i % len(PALETTE)]},
        }
        for i, (name, values) in enumerate(series.items())
    ]
    return {"data": traces, "layout": _layout(title, "", "", barmode="group")}


def traffic(title: str, targets: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A revision's traffic split as one horizontal stacked bar."""
    traces = []
    for i, target in enumerate(targets):
        weight = float(target.get("weight") or 0)
        role = str(target.get("role", ""))
        label = f"v{target.get('version')} {role}".strip()
        traces.append(
            {
                "type": "bar",
                "orientation": "h",
                "name": plain(label + (" (shadow)" if role == "shadow" else "")),
                "x": [round(weight * 100, 2)],
                "y": ["traffic %"],
                "marker": {"color": PALETTE[i % len(PALETTE)]},
            }
        )
    layout = _layout(title, "% of requests", "", barmode="stack", height=160)
    layout["xaxis"]["range"] = [0, 100]
    return {"data": traces, "layout": layout}


def heatmap(
    title: str, xs: Sequence[Any], names: Sequence[str], values: Sequence[Sequence[Any]]
) -> dict[str, Any]:
    return {
        "data": [
            {
                "type": "heatmap",
                "x": list(xs),
                "y": [plain(n) for n in names],
                "z": [list(row) for row in values],
                "colorscale": "YlOrRd",
                "reversescale": True,
                "zmin": 0,
            }
        ],
        "layout": _layout(title, "window", "", height=max(280, 18 * len(names) + 100)),
    }


def _ramp(share: float) -> str:
    r, g, b = (round(lo + (hi - lo) * share) for lo, hi in zip(LOW, HIGH, strict=True))
    return f"rgb({r},{g},{b})"


def parallel(
    title: str,
    names: Sequence[str],
    columns: Mapping[str, Sequence[float | None]],
    color_by: str | None,
) -> dict[str, Any] | None:
    """Parallel coordinates: an axis per numeric column, each scaled to its own range, a
    line per run (`names`), coloured by `color_by` from dark (low) to yellow (high). A
    run without a value on an axis has a gap there; hovering a point shows its value."""
    axes = []
    for label, values in columns.items():
        present = [v for v in values if v is not None]
        if present:
            axes.append((label, values, min(present), max(present)))
    if len(axes) < 2 or not names:
        return None
    shade = columns.get(color_by or "") or []
    known = [v for v in shade if v is not None]
    low, high = (min(known), max(known)) if known else (0.0, 0.0)
    traces = []
    for i, name in enumerate(names):
        ys, text = [], []
        for label, values, bottom, top in axes:
            value = values[i]
            ys.append(
                None
                if value is None
                else 0.5
                if top == bottom
                else (value - bottom) / (top - bottom)
            )
            text.append(f"{plain(label)}: {'—' if value is None else f'{value:.4g}'}")
        value = shade[i] if i < len(shade) else None
        share = 0.5 if value is None or high == low else (value - low) / (high - low)
        traces.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": plain(name),
                "x": list(range(len(axes))),
                "y": ys,
                "text": text,
                "hoverinfo": "name+text",
                "line": {"color": _ramp(share), "width": 1.5},
                "marker": {"size": 5},
                "showlegend": False,
            }
        )
    ticks = [f"{plain(label)}<br>{bottom:.3g} to {top:.3g}" for label, _, bottom, top in axes]
    layout = _layout(title, "", "scaled to each axis' range", height=380)
    layout["xaxis"].update(tickmode="array", tickvals=list(range(len(axes))), ticktext=ticks)
    layout["yaxis"].update(range=[-0.05, 1.05], tickvals=[0, 1], ticktext=["low", "high"])
    if color_by:
        layout["title"]["text"] += f" (colour: {plain(color_by)}, yellow is high)"
    return {"data": traces, "layout": layout}


def scatter(
    title: str,
    names: Sequence[str],
    xs: Sequence[float | None],
    ys: Sequence[float | None],
    x: str,
    y: str,
) -> dict[str, Any] | None:
    """One point per run that has both values."""
    points = [
        (n, a, b) for n, a, b in zip(names, xs, ys, strict=True) if a is not None and b is not None
    ]
    if not points:
        return None
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "markers",
                "x": [p[1] for p in points],
                "y": [p[2] for p in points],
                "text": [plain(p[0]) for p in points],
                "marker": {"color": PALETTE[0], "size": 9},
            }
        ],
        "layout": _layout(title, x, y, height=320),
    }


def quantiles(
    title: str, curves: Mapping[str, tuple[Iterable[float], Iterable[float]]]
) -> dict[str, Any]:
    """Distributions as quantile functions: value by cumulative share."""
    series = {k: (list(a), list(b)) for k, (a, b) in curves.items()}
    return lines(title, series, "share", "value", markers=False)
