"""A monitor's windows as one HTML page: drift over time, reference against live
distributions, performance, service health and alerts.

`render_html(monitor, windows, alerts)` is a pure function of stored records, so the CLI
can write a report from a server's answers and tests can check one without a store. The
page is self-contained (inline CSS and SVG, no scripts, no links out) so that it opens
from a file and can be mailed. Everything that came from users or data (names, rules,
categories, notes) is escaped.
"""

from __future__ import annotations

import bisect
import dataclasses
import html
import itertools
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from treadle.monitoring.drift import Thresholds
from treadle.store.records import AlertRecord, MonitorRecord, MonitorWindowRecord

REFERENCE = "#9aa4b1"
LIVE = "#2b6cb0"
BAD = "#c53030"
PALETTE = ("#2b6cb0", "#dd6b20", "#2f855a", "#805ad5", "#c53030", "#319795", "#b7791f")
WIDTH = 760
MAX_FEATURE_CHARTS = 12
MAX_HEAT_ROWS = 40
MAX_HEAT_COLUMNS = 120  # more windows than this share a column (the largest effect shows)
MAX_X_LABELS = 10
MAX_CATEGORIES = 10
DENSITY_BINS = 30
SECTIONS = (
    ("drift", "Drift"),
    ("distributions", "Distributions"),
    ("performance", "Performance"),
    ("health", "Health"),
    ("alerts", "Alerts"),
    ("windows", "Windows"),
)
METHODS = {
    "ks": "KS distance",
    "wasserstein": "Wasserstein (\u03c3)",
    "psi": "PSI",
    "js": "Jensen-Shannon",
    "chi2": "Cramér's V (χ²)",
}
# effect ÷ threshold -> colour; 1 is the threshold
HEAT = ((0.0, (247, 250, 252)), (0.5, (253, 224, 190)), (1.0, (243, 120, 50)), (2.0, (150, 20, 25)))

CSS = """
:root{--line:#e3e6ea;--muted:#6b7280;--bad:#c53030;--good:#2f855a}
*{box-sizing:border-box}
body{margin:0;background:#f4f5f7;color:#1f2937;
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
main{max-width:1120px;margin:0 auto;padding:20px 20px 48px}
h1{font-size:22px;margin:0}h2{font-size:16px;margin:0 0 10px}
h3{font-size:13px;margin:14px 0 4px;color:#374151}
section,header{background:#fff;border:1px solid var(--line);border-radius:10px;
padding:16px 20px;margin:14px 0}
nav{font-size:13px;margin-top:10px}nav a{margin-right:14px;color:#2b6cb0;text-decoration:none}
.muted,.empty{color:var(--muted)}.empty{font-style:italic}
.badge{display:inline-block;padding:0 8px;border-radius:999px;font-size:12px;font-weight:600;
background:#e5e7eb;color:#374151;vertical-align:1px}
.badge.ok,.badge.resolved{background:#dcf5e6;color:#1f6b40}
.badge.drift,.badge.alerting,.badge.error,.badge.firing,.badge.drifted{background:#fde2e2;color:#9b1c1c}
.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));
gap:10px 18px;margin:14px 0 4px}
.facts span{display:block;font-size:11px;text-transform:uppercase;letter-spacing:.05em;
color:var(--muted)}
.firing{background:#fff5f5;border:1px solid #f5b5b5;border-radius:8px;padding:8px 12px;
margin-top:12px}
.firing b{color:var(--bad)}
.legend{font-size:12px;color:var(--muted);margin:0 0 4px}
.legend i{display:inline-block;width:16px;height:3px;vertical-align:middle;margin:0 5px 0 12px}
.legend i.box{height:10px;width:10px}.legend i.dash{border-top:2px dashed var(--bad);height:0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:12px}
.card{border:1px solid var(--line);border-radius:8px;padding:8px 10px}
.card.drifted{border-color:#f1a5a5;box-shadow:inset 3px 0 0 var(--bad)}
.card h3{margin:0 0 4px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.caption{font-size:12px;color:#4b5563}
.note{background:#fffbeb;border:1px solid #f6e05e;border-radius:6px;padding:6px 10px;margin:8px 0}
.scroll{max-height:520px;overflow:auto}
table{border-collapse:collapse;width:100%;font-size:13px}
th{position:sticky;top:0;background:#fff;font-weight:600;color:#374151}
th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:left;white-space:nowrap}
.num{text-align:right;font-variant-numeric:tabular-nums}
svg{display:block;max-width:100%;height:auto}
svg text{font-size:11px;fill:#6b7280}
.hit{fill:transparent}.hit:hover{fill:rgba(17,24,39,.07)}
"""


def render_html(
    monitor: MonitorRecord,
    windows: Sequence[MonitorWindowRecord],
    alerts: Sequence[AlertRecord],
    *,
    now: float | None = None,
) -> str:
    """The monitor's report as a self-contained HTML page.

    `windows` are the windows to show (any order; they are drawn oldest first), `alerts`
    the monitor's alerts. The page opens from a file: no scripts, nothing fetched.
    """
    ordered = sorted(windows, key=lambda w: w.seq)
    body = [_header(monitor, ordered, alerts, time.time() if now is None else now)]
    if ordered:
        axis = _Axis.of(ordered)
        body += [
            _drift_section(monitor, ordered, axis),
            _distributions_section(ordered),
            _performance_section(ordered, axis),
            _health_section(ordered, axis),
        ]
    else:
        body.append(
            _section(
                "windows",
                "Windows",
                '<p class="empty">No windows yet: the monitor has not closed a window, '
                "so there is nothing to draw. Windows close as predictions arrive.</p>",
            )
        )
    body.append(_alerts_section(alerts))
    if ordered:
        body.append(_windows_section(ordered))
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(f'monitor {monitor.name}')} · treadle</title>"
        f"<style>{CSS}</style></head>\n<body><main>\n"
        + "\n".join(body)
        + "\n</main></body></html>\n"
    )


# -- sections -------------------------------------------------------------------------------


def _header(
    monitor: MonitorRecord,
    windows: Sequence[MonitorWindowRecord],
    alerts: Sequence[AlertRecord],
    now: float,
) -> str:
    if monitor.window_kind == "rows":
        size = f"every {monitor.window_size:,} predictions"
    else:
        size = f"every {_duration(monitor.window_size)}"
    statuses = Counter(w.status for w in windows)
    if windows:
        span = f"{_when(windows[0].start_ts)} → {_when(windows[-1].end_ts)}"
        count = f"{len(windows):,}" + "".join(
            f" · {statuses[s]:,} {label}"
            for s, label in (("drift", "drifted"), ("no_data", "without data"))
            if statuses[s]
        )
    else:
        span, count = "—", "none yet"
    share = _share_threshold(monitor)
    limits = ", ".join(f"{k} {v}" for k, v in sorted(monitor.thresholds.items()) if k != "share")
    facts = [
        ("deployment", _e(monitor.deployment)),
        ("window", _e(size)),
        ("state", f'{_badge(monitor.state)} <span class="muted">{_e(monitor.detail)}</span>'),
        ("time range (UTC)", _e(span)),
        ("windows", _e(count)),
        (
            "thresholds",
            _e(f"dataset drift when ≥ {share:g} of features drift")
            + (f"<br>{_e(limits)}" if limits else ""),
        ),
        ("rules", "<br>".join(_e(r) for r in monitor.rules) or '<span class="muted">none</span>'),
        ("report written (UTC)", _e(_when(now))),
    ]
    firing = [a for a in alerts if a.state == "firing"]
    alarm = ""
    if firing:
        items = "".join(
            f"<li><b>{_e(a.name)}</b>: {_e(a.rule)} · value {_e(_num(a.value))} · since window "
            f"#{a.fired_seq} ({_e(_when(a.fired_at))})</li>"
            for a in firing
        )
        alarm = f'<div class="firing"><b>{len(firing)} alert(s) firing</b><ul>{items}</ul></div>'
    links = "".join(f'<a href="#{anchor}">{label}</a>' for anchor, label in SECTIONS)
    nav = f"<nav>{links}</nav>" if windows else ""  # an empty report has no sections to visit
    cells = "".join(f"<div><span>{k}</span>{v}</div>" for k, v in facts)
    return (
        f"<header><h1>Monitor {_e(monitor.name)}</h1>"
        f'<div class="facts">{cells}</div>{alarm}{nav}</header>'
    )


def _drift_section(
    monitor: MonitorRecord,
    windows: Sequence[MonitorWindowRecord],
    axis: _Axis,
) -> str:
    drifts = [_drift(w) for w in windows]
    shares = [_float(d.get("drift_share")) if d else None for d in drifts]
    parts = []
    if any(v is not None for v in shares):
        share = _share_threshold(monitor)
        parts.append("<h3>Share of features drifted, per window</h3>")
        parts.append(
            _line_chart(
                [_Series("drift share", shares, LIVE)],
                axis,
                y_range=(0.0, 1.0),
                guide=(share, f"threshold {share:g}"),
                marks=[i for i, d in enumerate(drifts) if d and d.get("dataset_drift")],
            )
        )
        parts.append("<h3>Effect size per feature (colour: effect ÷ threshold)</h3>")
        parts.append(_heatmap(axis.seqs, drifts))
    else:
        parts.append(
            '<p class="empty">No window has been compared with a reference profile yet.</p>'
        )
    notes = Counter(str(w.stats["drift_note"]) for w in windows if w.stats.get("drift_note"))
    for note, count in notes.items():
        parts.append(f'<p class="note">{count:,} window(s) without drift: {_e(note)}</p>')
    return _section("drift", "Drift over time", "".join(parts))


def _distributions_section(windows: Sequence[MonitorWindowRecord]) -> str:
    latest = next((w for w in reversed(windows) if w.rows > 0), None)
    if latest is None:
        return _section(
            "distributions",
            "Reference vs live",
            '<p class="empty">No window has had data yet.</p>',
        )
    parts = []
    compared = latest if _drift(latest) else next((w for w in reversed(windows) if _drift(w)), None)
    if compared is not latest:
        note = latest.stats.get("drift_note") or "it was not compared with a reference profile"
        parts.append(f'<p class="note">The latest window with data, #{latest.seq}: {_e(note)}</p>')
    if compared is None:
        return _section("distributions", "Reference vs live", "".join(parts))
    drift = _drift(compared) or {}
    features = sorted(
        _features(drift),
        key=lambda f: (not f.get("drifted"), -_ratio(f), str(f.get("name"))),
    )
    drifted = [f for f in features if f.get("drifted")]
    verdict = "dataset drift" if drift.get("dataset_drift") else "no dataset drift"
    parts.append(
        f"<p>Window #{compared.seq} ({_e(_when(compared.start_ts))} → "
        f"{_e(_when(compared.end_ts))}, {compared.rows:,} rows): {len(drifted)} of "
        f"{len(features)} features drifted (share {_e(_num(drift.get('drift_share')))}), "
        f"<b>{verdict}</b>.</p>"
        '<p class="legend"><i class="box" style="background:#9aa4b1"></i>reference '
        f'<i class="box" style="background:{LIVE}"></i>live window</p>'
    )
    cards = [_feature_card(f) for f in features[:MAX_FEATURE_CHARTS]]
    prediction = drift.get("prediction")
    if isinstance(prediction, Mapping):
        cards.append(_feature_card(prediction, title="prediction (the model's output)"))
    parts.append(f'<div class="grid">{"".join(cards)}</div>')
    if len(features) > MAX_FEATURE_CHARTS:
        rest = [str(f.get("name")) for f in features[MAX_FEATURE_CHARTS:]]
        parts.append(
            f'<p class="muted">{len(rest)} more feature(s), none drifted or with a smaller '
            f"effect: {_e(', '.join(rest[:40]))}{' …' if len(rest) > 40 else ''}</p>"
        )
    return _section("distributions", "Reference vs live", "".join(parts))


def _performance_section(windows: Sequence[MonitorWindowRecord], axis: _Axis) -> str:
    perf = [_dict(w.stats.get("performance")) for w in windows]
    labelled = [_float(p.get("labelled")) for p in perf]
    if not any(labelled):
        return _section(
            "performance",
            "Performance",
            '<p class="empty">No labels yet: send them with <code>POST /feedback</code> '
            "(keyed by request id) and windows closed afterwards will show accuracy or "
            "error here.</p>",
        )
    keys = _metric_keys(windows)
    series = [
        _Series(key, [_float(p.get(key)) for p in perf], PALETTE[i])
        for i, key in enumerate(keys)
        if any(p.get(key) is not None for p in perf)
    ]
    parts = [f"<h3>{_e(' / '.join(s.name for s in series))} per window</h3>"]
    parts.append(_line_chart(series, axis, floor=0.0 if keys[0] == "mae" else None))
    parts.append("<h3>Labelled predictions per window</h3>")
    parts.append(_bar_chart(_Series("labelled", labelled, REFERENCE), axis))
    versions = _versions(windows)
    if len(versions) > 1:
        main = keys[0] if keys[0] != "mae" else "rmse"
        by_version = [
            _Series(
                f"version {v}",
                [_float(_dict(_dict(p.get("by_version")).get(v)).get(main)) for p in perf],
                PALETTE[i % len(PALETTE)],
            )
            for i, v in enumerate(versions)
        ]
        traffic = [
            _Series(
                f"version {v}",
                [
                    (_float(_dict(w.stats.get("versions")).get(v)) or 0.0) / w.rows
                    if w.rows
                    else None
                    for w in windows
                ],
                PALETTE[i % len(PALETTE)],
            )
            for i, v in enumerate(versions)
        ]
        parts.append(f"<h3>{_e(main)} per version (several versions served)</h3>")
        parts.append(_line_chart(by_version, axis))
        parts.append("<h3>Share of predictions per version</h3>")
        parts.append(_line_chart(traffic, axis, y_range=(0.0, 1.0)))
    return _section("performance", "Performance over time", "".join(parts))


def _health_section(windows: Sequence[MonitorWindowRecord], axis: _Axis) -> str:
    health = [_dict(w.stats.get("health")) for w in windows]
    latency = [
        _Series(key[:3], [_float(h.get(key)) for h in health], color)
        for key, color in (("p50_ms", PALETTE[2]), ("p95_ms", PALETTE[1]), ("p99_ms", BAD))
    ]
    if not any(v is not None for s in latency for v in s.values):
        return _section("health", "Service health", '<p class="empty">No requests yet.</p>')
    parts = ["<h3>Latency per window (ms)</h3>", _line_chart(latency, axis, floor=0.0)]
    rate = [_float(h.get("requests_per_s")) for h in health]
    if any(v is not None for v in rate):
        parts.append("<h3>Requests per second</h3>")
        parts.append(_line_chart([_Series("requests/s", rate, LIVE)], axis, floor=0.0))
    errors = [_float(h.get("error_rate")) for h in health]
    if any(v is not None for v in errors):
        parts.append("<h3>Error rate</h3>")
        parts.append(_line_chart([_Series("errors", errors, BAD)], axis, floor=0.0))
    versions = _versions(windows)
    if len(versions) > 1:
        p99 = [
            _Series(
                f"version {v}",
                [_float(_dict(_dict(h.get("by_version")).get(v)).get("p99_ms")) for h in health],
                PALETTE[i % len(PALETTE)],
            )
            for i, v in enumerate(versions)
        ]
        parts.append("<h3>p99 latency per version (ms)</h3>")
        parts.append(_line_chart(p99, axis, floor=0.0))
    return _section("health", "Service health over time", "".join(parts))


def _alerts_section(alerts: Sequence[AlertRecord]) -> str:
    if not alerts:
        return _section("alerts", "Alerts", '<p class="empty">No alert has fired.</p>')
    ordered = sorted(alerts, key=lambda a: (a.state != "firing", -a.fired_at))
    rows = "".join(
        f"<tr><td><b>{_e(a.name)}</b></td><td>{_e(a.rule)}</td><td>{_badge(a.state)}</td>"
        f"<td>{_e(_when(a.fired_at))} · #{a.fired_seq}</td>"
        f"<td>{_e(_when(a.resolved_at)) if a.resolved_at else '—'}</td>"
        f'<td class="num">{_e(_num(a.value))}</td></tr>'
        for a in ordered
    )
    head = "<tr><th>alert</th><th>rule</th><th>state</th><th>fired (window)</th>"
    head += '<th>resolved</th><th class="num">value</th></tr>'
    return _section("alerts", "Alerts", f'<div class="scroll"><table>{head}{rows}</table></div>')


def _windows_section(windows: Sequence[MonitorWindowRecord]) -> str:
    key = _metric_keys(windows)[0]
    key = "rmse" if key == "mae" else key
    rows = []
    for w in reversed(windows):
        drift = _drift(w)
        if drift:
            share = _num(drift.get("drift_share"))
            names = [str(f.get("name")) for f in _features(drift) if f.get("drifted")]
            drifted = ", ".join(names[:5]) + (f" +{len(names) - 5}" if len(names) > 5 else "")
        else:
            share = "no profile" if w.stats.get("drift_note") else "—"
            drifted = ""
        perf = _dict(w.stats.get("performance"))
        metric = _num(perf.get(key)) if perf.get("labelled") else ("no labels" if w.rows else "—")
        rows.append(
            f"<tr><td>#{w.seq}</td><td>{_e(_when(w.end_ts))}</td>"
            f'<td class="num">{w.rows:,}</td><td>{_badge(w.status)}</td>'
            f'<td class="num">{_e(share)}</td><td>{_e(drifted)}</td>'
            f'<td class="num">{_e(metric)}</td>'
            f'<td class="num">{_e(_num(_dict(w.stats.get("health")).get("p99_ms")))}</td></tr>'
        )
    head = (
        '<tr><th>window</th><th>end (UTC)</th><th class="num">rows</th><th>status</th>'
        '<th class="num">drift share</th><th>drifted features</th>'
        f'<th class="num">{_e(key)}</th><th class="num">p99 ms</th></tr>'
    )
    table = f'<div class="scroll"><table>{head}{"".join(rows)}</table></div>'
    return _section("windows", "Windows (newest first)", table)


def _section(anchor: str, title: str, inner: str) -> str:
    return f'<section id="{anchor}"><h2>{_e(title)}</h2>{inner}</section>'


# -- charts over windows ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Series:
    name: str
    values: Sequence[float | None]
    color: str


@dataclasses.dataclass(frozen=True)
class _Axis:
    """The windows along a chart's x axis: numbers, end times, which ones had no data."""

    seqs: list[int]
    ends: list[str]
    empty: list[int]

    @classmethod
    def of(cls, windows: Sequence[MonitorWindowRecord]) -> _Axis:
        return cls(
            [w.seq for w in windows],
            [_when(w.end_ts) for w in windows],
            [i for i, w in enumerate(windows) if w.rows == 0],
        )


class _Plot:
    """A chart over windows: x is a window's position, y a value on round ticks."""

    left, right, top, bottom = 52.0, 14.0, 10.0, 22.0

    def __init__(
        self,
        axis: _Axis,
        values: Sequence[float],
        height: int,
        fixed: tuple[float, float] | None = None,
    ) -> None:
        self.axis, self.height = axis, height
        self.lo, self.hi, self.ticks = _nice_range(values, fixed)
        self.band = (WIDTH - self.left - self.right) / max(len(axis.seqs), 1)
        self.inner = height - self.top - self.bottom

    def x(self, i: int) -> float:
        return self.left + (i + 0.5) * self.band

    def y(self, value: float) -> float:
        clipped = min(max(value, self.lo), self.hi)
        return self.top + (self.hi - clipped) / (self.hi - self.lo) * self.inner

    def svg(self, items: Sequence[str], series: Sequence[_Series]) -> str:
        """The frame (empty windows shaded, grid, tick labels), `items` over it, and a
        transparent column per window whose <title> shows its values on hover."""
        right, base, axis = WIDTH - self.right, self.height - self.bottom, self.axis
        out = [
            f'<rect x="{self.left + i * self.band:.1f}" y="{self.top}" width="{self.band:.1f}" '
            f'height="{self.inner:.0f}" fill="#f1f2f4"/>'
            for i in axis.empty
        ]
        for t in self.ticks:
            y = self.y(t)
            out.append(
                f'<line x1="{self.left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eceef1"/>'
                f'<text x="{self.left - 6}" y="{y + 4:.1f}" text-anchor="end">{_e(_num(t))}</text>'
            )
        out.append(
            f'<line x1="{self.left}" x2="{right}" y1="{base}" y2="{base}" stroke="#c9ced6"/>'
        )
        out += [
            f'<text x="{self.x(i):.1f}" y="{base + 15}" text-anchor="middle">#{axis.seqs[i]}</text>'
            for i in _label_positions(len(axis.seqs))
        ]
        out += items
        empty = set(axis.empty)
        for i, seq in enumerate(axis.seqs):
            tip = f"#{seq} · {axis.ends[i]}" + (" · no data" if i in empty else "")
            tip += "".join(f" · {s.name} {_num(s.values[i])}" for s in series)
            out.append(
                f'<rect class="hit" x="{self.left + i * self.band:.1f}" y="{self.top}" '
                f'width="{self.band:.1f}" height="{self.inner:.0f}"><title>{_e(tip)}</title></rect>'
            )
        return (
            f'<svg viewBox="0 0 {WIDTH} {self.height}" width="{WIDTH}" height="{self.height}" '
            f'role="img">{"".join(out)}</svg>'
        )


def _line_chart(
    series: Sequence[_Series],
    axis: _Axis,
    *,
    y_range: tuple[float, float] | None = None,
    floor: float | None = None,
    guide: tuple[float, str] | None = None,
    marks: Sequence[int] = (),
) -> str:
    """Lines over windows; a missing value breaks its line. `floor` is a value the y
    axis must show, `guide` a dashed threshold, `marks` windows circled on the first line."""
    values = [v for s in series for v in s.values if v is not None]
    values += [v for v in (floor, guide[0] if guide else None) if v is not None]
    plot = _Plot(axis, values, 190, y_range)
    items = []
    if guide:
        y = plot.y(guide[0])
        items.append(
            f'<line x1="{plot.left}" x2="{WIDTH - plot.right}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{BAD}" stroke-dasharray="5 4" stroke-width="1.2"/>'
            f'<text x="{WIDTH - plot.right - 4}" y="{y - 4:.1f}" text-anchor="end">'
            f"{_e(guide[1])}</text>"
        )
    dots = len(axis.seqs) <= 60
    for s in series:
        for run in _runs(s.values):
            if len(run) > 1:
                points = " ".join(f"{plot.x(i):.1f},{plot.y(v):.1f}" for i, v in run)
                items.append(
                    f'<polyline points="{points}" fill="none" stroke="{s.color}" '
                    'stroke-width="1.8" stroke-linejoin="round"/>'
                )
            if dots or len(run) == 1:
                items += [
                    f'<circle cx="{plot.x(i):.1f}" cy="{plot.y(v):.1f}" r="2.4" fill="{s.color}"/>'
                    for i, v in run
                ]
    for i in marks:
        v = series[0].values[i]
        if v is not None:
            items.append(
                f'<circle cx="{plot.x(i):.1f}" cy="{plot.y(v):.1f}" r="4.5" fill="{BAD}" '
                'stroke="#fff" stroke-width="1.5"/>'
            )
    legend = "".join(f'<i style="background:{s.color}"></i>{_e(s.name)}' for s in series)
    if guide:
        legend += f'<i class="dash"></i>{_e(guide[1])}'
    if marks:
        legend += f'<i class="box" style="background:{BAD};border-radius:50%"></i>dataset drift'
    if axis.empty:
        legend += '<i class="box" style="background:#e5e7eb"></i>no data'
    return f'<div class="legend">{legend}</div>{plot.svg(items, series)}'


def _bar_chart(series: _Series, axis: _Axis) -> str:
    plot = _Plot(axis, [v for v in series.values if v is not None] + [0.0], 120)
    width = max(plot.band * 0.7, 1.0)
    items = [
        f'<rect x="{plot.x(i) - width / 2:.1f}" y="{plot.y(v):.1f}" width="{width:.1f}" '
        f'height="{plot.y(0.0) - plot.y(v):.1f}" fill="{series.color}"/>'
        for i, v in enumerate(series.values)
        if v
    ]
    return plot.svg(items, [series])


def _heatmap(seqs: Sequence[int], drifts: Sequence[Mapping[str, Any] | None]) -> str:
    """Features (rows) by windows (columns), coloured by effect ÷ threshold; drifted
    cells outlined. Past MAX_HEAT_COLUMNS windows, neighbours share a column."""
    cells: dict[str, dict[int, tuple[float, bool, float]]] = {}
    for i, drift in enumerate(drifts):
        for f in _features(drift):
            effect = _float(f.get("effect")) or 0.0
            cells.setdefault(str(f.get("name")), {})[i] = (
                _ratio(f),
                bool(f.get("drifted")),
                effect,
            )
    if not cells:
        return '<p class="empty">No feature was compared.</p>'
    names = sorted(
        cells,
        key=lambda n: (
            -sum(c[1] for c in cells[n].values()),
            -max(c[0] for c in cells[n].values()),
            n,
        ),
    )
    shown = names[:MAX_HEAT_ROWS]
    n = len(seqs)
    step = math.ceil(n / MAX_HEAT_COLUMNS)
    columns = math.ceil(n / step)
    left, cell_h = 170.0, 14.0
    cell_w = min(22.0, (WIDTH - left - 10) / columns)
    height = int(len(shown) * cell_h + 26)
    items = []
    for row, name in enumerate(shown):
        y = row * cell_h
        items.append(
            f'<text x="{left - 6}" y="{y + 11:.0f}" text-anchor="end">{_e(_clip(name, 26))}'
            f"<title>{_e(name)}</title></text>"
            f'<rect x="{left}" y="{y:.0f}" width="{columns * cell_w:.1f}" '
            f'height="{cell_h - 1}" fill="#e5e7eb"/>'
        )
        for c in range(columns):
            found = [
                cells[name][i] for i in range(c * step, min(n, (c + 1) * step)) if i in cells[name]
            ]
            if not found:
                continue
            ratio = max(f[0] for f in found)
            drifted = any(f[1] for f in found)
            first, last = seqs[c * step], seqs[min(n, (c + 1) * step) - 1]
            where = f"#{first}" if first == last else f"#{first} to #{last}"
            tip = f"{name} · {where} · effect {_num(max(f[2] for f in found))}" + (
                " · drifted" if drifted else ""
            )
            outline = ' stroke="#111827" stroke-width="1.4"' if drifted else ""
            items.append(
                f'<rect x="{left + c * cell_w + 0.7:.1f}" y="{y + 0.7:.1f}" '
                f'width="{max(cell_w - 1.4, 0.6):.1f}" height="{cell_h - 2.4:.1f}" '
                f'fill="{_heat_color(ratio)}"{outline}><title>{_e(tip)}</title></rect>'
            )
    base = len(shown) * cell_h + 16
    label_every = math.ceil(columns / MAX_X_LABELS)
    for c in range(0, columns, label_every):
        x = left + (c + 0.5) * cell_w
        items.append(
            f'<text x="{x:.1f}" y="{base:.0f}" text-anchor="middle">#{seqs[c * step]}</text>'
        )
    swatches = "".join(
        f'<i class="box" style="background:{_heat_color(r)}"></i>{label}'
        for r, label in ((0.0, "0"), (0.5, "½"), (1.0, "threshold"), (2.0, "twice or more"))
    )
    notes = ['<i class="box" style="border:1.5px solid #111827"></i>drifted']
    notes.append('<i class="box" style="background:#e5e7eb"></i>not compared')
    if step > 1:
        notes.append(f" · each column is {step} windows (the largest effect)")
    if len(names) > len(shown):
        notes.append(f" · {len(names) - len(shown)} more features not shown")
    svg = (
        f'<svg viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img">'
        f"{''.join(items)}</svg>"
    )
    return f'<div class="legend">{swatches}{"".join(notes)}</div>{svg}'


# -- reference vs live ---------------------------------------------------------------------------


def _feature_card(feature: Mapping[str, Any], title: str | None = None) -> str:
    name = title or str(feature.get("name"))
    if feature.get("kind") == "numeric":
        chart = _numeric_chart(feature)
    else:
        chart = _categorical_chart(feature)
    drifted = bool(feature.get("drifted"))
    badge = ' <span class="badge drifted">drifted</span>' if drifted else ""
    return (
        f'<div class="card{" drifted" if drifted else ""}">'
        f'<h3 title="{_e(name)}">{_e(name)}{badge}</h3>'
        f'{chart}<div class="caption">{_caption(feature)}</div></div>'
    )


def _caption(f: Mapping[str, Any]) -> str:
    method = str(f.get("method", ""))
    effect, threshold = _float(f.get("effect")), _float(f.get("threshold"))
    sign = "≥" if effect is not None and threshold is not None and effect >= threshold else "<"
    label = _e(METHODS.get(method, method))
    parts = [f"{label} <b>{_num(effect)}</b> {sign} threshold {_num(threshold)}"]
    p_value = _float(f.get("p_value"))
    if p_value is not None:
        parts.append(f"p {_num(p_value)}")
    rows = _float(f.get("rows")) or 0.0
    for key, label in (("missing", "missing"), ("out_of_range", "out of training range")):
        count = _float(f.get(key))
        if count:
            share = f" ({count / rows:.1%})" if rows else ""
            parts.append(f"{count:,.0f} {label}{share}")
    new = _dict(f.get("new_categories"))
    if new:
        parts.append("new values: " + _e(", ".join(_clip(str(k), 20) for k in list(new)[:5])))
    return " · ".join(parts)


def _numeric_chart(f: Mapping[str, Any]) -> str:
    """Densities (from the percentiles: the mass between bin edges) above, CDFs below."""
    curves = [
        (q, color)
        for q, color in (
            (_quantiles(f.get("reference")), REFERENCE),
            (_quantiles(f.get("live")), LIVE),
        )
        if q is not None
    ]
    if not curves:
        return '<p class="empty">no distribution kept</p>'
    lo = min(points[0] for (_, points), _ in curves)
    hi = max(points[-1] for (_, points), _ in curves)
    if hi <= lo:
        pad = abs(lo) * 0.1 or 0.5
        lo, hi = lo - pad, hi + pad
    width, left, right = 320.0, 8.0, 8.0
    top, density_h, cdf_top, cdf_h = 14.0, 70.0, 104.0, 52.0

    def x(v: float) -> float:
        return left + (v - lo) / (hi - lo) * (width - left - right)

    edges = [lo + (hi - lo) * k / DENSITY_BINS for k in range(DENSITY_BINS + 1)]
    masses = []
    for (levels, points), _ in curves:
        cdf = [0.0] + [_cdf(e, levels, points) for e in edges[1:]]
        masses.append([max(b - a, 0.0) for a, b in itertools.pairwise(cdf)])
    peak = max(max(m) for m in masses) or 1.0
    items = [
        f'<text x="{left}" y="10">density</text><text x="{left}" y="{cdf_top - 4}">CDF</text>',
        f'<line x1="{left}" x2="{width - right}" y1="{top + density_h}" '
        f'y2="{top + density_h}" stroke="#c9ced6"/>',
        f'<rect x="{left}" y="{cdf_top}" width="{width - left - right}" height="{cdf_h}" '
        'fill="none" stroke="#eceef1"/>',
    ]
    for ((levels, points), color), mass in zip(curves, masses, strict=True):
        path = f"M{x(lo):.1f},{top + density_h:.1f}"
        for k, m in enumerate(mass):
            path += f"V{top + density_h - m / peak * density_h:.1f}H{x(edges[k + 1]):.1f}"
        path += f"V{top + density_h:.1f}Z"
        fill = 0.45 if color == REFERENCE else 0.18
        items.append(
            f'<path d="{path}" fill="{color}" fill-opacity="{fill}" stroke="{color}" '
            'stroke-width="1.3"/>'
        )
        steps = [(lo, 0.0), *zip(points, levels, strict=True), (hi, 1.0)]
        line = " ".join(f"{x(v):.1f},{cdf_top + cdf_h - q * cdf_h:.1f}" for v, q in steps)
        items.append(f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="1.6"/>')
    base = cdf_top + cdf_h + 13
    items.append(
        f'<text x="{left}" y="{base}">{_e(_num(lo))}</text>'
        f'<text x="{width / 2}" y="{base}" text-anchor="middle">{_e(_num((lo + hi) / 2))}</text>'
        f'<text x="{width - right}" y="{base}" text-anchor="end">{_e(_num(hi))}</text>'
    )
    if len(curves) == 1 and curves[0][1] == REFERENCE:
        items.append(f'<text x="{width - right}" y="10" text-anchor="end">no live values</text>')
    height = int(base + 4)
    return (
        f'<svg viewBox="0 0 {width:.0f} {height}" width="{width:.0f}" height="{height}" role="img">'
        f"{''.join(items)}</svg>"
    )


def _categorical_chart(f: Mapping[str, Any]) -> str:
    """Paired bars of each value's share: reference above, live below."""
    reference, live = _shares(f.get("reference")), _shares(f.get("live"))
    if not reference and not live:
        return '<p class="empty">no values to compare</p>'
    new = {str(k) for k in _dict(f.get("new_categories"))}
    values = sorted(
        set(reference) | set(live), key=lambda v: (-max(reference.get(v, 0.0), live.get(v, 0.0)), v)
    )[:MAX_CATEGORIES]
    rows: list[tuple[str, float, float, bool]] = [
        (v, reference.get(v, 0.0), live.get(v, 0.0), v in new) for v in values
    ]
    rest = (
        max(1.0 - sum(r[1] for r in rows), 0.0) if reference else 0.0,
        max(1.0 - sum(r[2] for r in rows), 0.0) if live else 0.0,
    )
    if max(rest) > 0.005:
        rows.append(("", rest[0], rest[1], False))
    peak = max(max(r[1], r[2]) for r in rows) or 1.0
    width, left, bar_w, row_h = 320.0, 104.0, 160.0, 22.0
    items = []
    for k, (value, ref, cur, is_new) in enumerate(rows):
        y = k * row_h + 2
        label = _e(_clip(value, 16)) if value else "(all others)"
        style = f' style="fill:{BAD}"' if is_new else ""
        items.append(
            f'<text x="{left - 6}" y="{y + 13:.0f}" text-anchor="end"{style}>{label}'
            f"<title>{_e(value or 'all other values')}{' (new)' if is_new else ''}</title></text>"
        )
        for j, (share, color) in enumerate(((ref, REFERENCE), (cur, LIVE))):
            w = share / peak * bar_w
            items.append(
                f'<rect x="{left}" y="{y + j * 9:.0f}" width="{max(w, 0.5):.1f}" height="8" '
                f'fill="{color}"/>'
                f'<text x="{left + w + 4:.1f}" y="{y + j * 9 + 8:.0f}">{share:.1%}</text>'
            )
    height = int(len(rows) * row_h + 4)
    return (
        f'<svg viewBox="0 0 {width:.0f} {height}" width="{width:.0f}" height="{height}" role="img">'
        f"{''.join(items)}</svg>"
    )


# -- reading the stats -------------------------------------------------------------------------


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _drift(window: MonitorWindowRecord) -> Mapping[str, Any] | None:
    drift = window.stats.get("drift")
    return drift if isinstance(drift, Mapping) else None


def _features(drift: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    found = (drift or {}).get("features") or []
    return [f for f in found if isinstance(f, Mapping)]


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _ratio(f: Mapping[str, Any]) -> float:
    """Effect ÷ threshold, comparable across methods; chi2's threshold is 0 (its verdict
    is the p-value), so there a drifted feature counts from 1 up."""
    effect = _float(f.get("effect")) or 0.0
    threshold = _float(f.get("threshold")) or 0.0
    if threshold > 0:
        return effect / threshold
    return 1.0 + effect if f.get("drifted") else min(effect, 0.9)


def _share_threshold(monitor: MonitorRecord) -> float:
    return _float(monitor.thresholds.get("share")) or Thresholds().share


def _versions(windows: Sequence[MonitorWindowRecord]) -> list[str]:
    found: set[str] = set()
    for w in windows:
        found |= set(_dict(w.stats.get("versions")))
        found |= set(_dict(_dict(w.stats.get("performance")).get("by_version")))
    return sorted(found, key=lambda v: (len(v), v))


def _metric_keys(windows: Sequence[MonitorWindowRecord]) -> tuple[str, ...]:
    for w in reversed(windows):
        perf = _dict(w.stats.get("performance"))
        if perf.get("accuracy") is not None:
            return ("accuracy", "f1", "auc")
        if perf.get("rmse") is not None:
            return ("mae", "rmse")
    return ("accuracy", "f1", "auc")


def _quantiles(summary: Any) -> tuple[list[float], list[float]] | None:
    """(levels, values) of a numeric summary, values made non-decreasing."""
    points = [_float(v) for v in _dict(summary).get("percentiles") or []]
    levels = [_float(v) for v in _dict(summary).get("levels") or []]
    if len(levels) != len(points):
        levels = [k / (len(points) - 1) for k in range(len(points))] if len(points) > 1 else []
    if len(points) < 2 or any(v is None for v in points + levels):
        return None
    clean = [float(v or 0.0) for v in points]
    for k in range(1, len(clean)):
        clean[k] = max(clean[k], clean[k - 1])
    return [float(q or 0.0) for q in levels], clean


def _cdf(value: float, levels: Sequence[float], points: Sequence[float]) -> float:
    """The CDF at `value`, linear between percentiles; at tied percentiles (a discrete
    column) the highest level holding the value."""
    k = bisect.bisect_right(points, value) - 1
    if k < 0:
        return 0.0
    if k >= len(points) - 1:
        return 1.0
    span = points[k + 1] - points[k]
    return levels[k] + (levels[k + 1] - levels[k]) * (value - points[k]) / span


def _shares(summary: Any) -> dict[str, float]:
    frequencies = _dict(_dict(summary).get("frequencies"))
    counts = {str(k): c for k, v in frequencies.items() if (c := _float(v)) is not None}
    total = _float(_dict(summary).get("count")) or sum(counts.values())
    return {k: c / total for k, c in counts.items()} if total else {}


# -- formatting ----------------------------------------------------------------------------------


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _badge(state: str) -> str:
    return f'<span class="badge {_e(state)}">{_e(state.replace("_", " "))}</span>'


def _num(value: Any) -> str:
    v = _float(value)
    if v is None:
        return "—"
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) < 1e-3:
        return f"{v:.1e}"
    return f"{v:.3g}"


def _when(ts: float | None) -> str:
    if ts is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds:,} s"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _runs(values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    """Consecutive known values, as (index, value) runs."""
    runs: list[list[tuple[int, float]]] = []
    current: list[tuple[int, float]] = []
    for i, v in enumerate(values):
        if v is None:
            if current:
                runs.append(current)
            current = []
        else:
            current.append((i, v))
    if current:
        runs.append(current)
    return runs


def _label_positions(n: int) -> list[int]:
    step = max(math.ceil(n / MAX_X_LABELS), 1)
    positions = list(range(0, n, step))
    if positions and n - 1 - positions[-1] >= step / 2:
        positions.append(n - 1)
    return positions


def _nice_range(
    values: Sequence[float], fixed: tuple[float, float] | None
) -> tuple[float, float, list[float]]:
    """A y range with round ticks that holds every value (or `fixed`)."""
    if fixed:
        lo, hi = fixed
        lo, hi = min([lo, *values]), max([hi, *values])
    elif values:
        lo, hi = min(values), max(values)
    else:
        lo, hi = 0.0, 1.0
    if hi <= lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if raw <= m * magnitude)
    if not fixed:
        lo, hi = math.floor(lo / step) * step, math.ceil(hi / step) * step
    first = math.ceil(lo / step - 1e-9)
    ticks = [k * step for k in range(first, math.floor(hi / step + 1e-9) + 1)]
    return lo, hi, ticks


def _heat_color(ratio: float) -> str:
    ratio = min(max(ratio, 0.0), HEAT[-1][0])
    for (a, ca), (b, cb) in itertools.pairwise(HEAT):
        if ratio <= b:
            t = (ratio - a) / (b - a)
            rgb = [round(x + (y - x) * t) for x, y in zip(ca, cb, strict=True)]
            return "#{:02x}{:02x}{:02x}".format(*rgb)
    return "#{:02x}{:02x}{:02x}".format(*HEAT[-1][1])
