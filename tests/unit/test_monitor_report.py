"""The monitor report: one self-contained HTML page drawn from stored records, with a
chart per section, every user string escaped, and graceful pages for the odd cases
(no windows, no profile, no labels, one window, hundreds of windows)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from statistics import NormalDist
from typing import Any

from treadle.monitoring.report import render_html
from treadle.store.records import AlertRecord, MonitorRecord, MonitorWindowRecord

T0 = 1_717_200_000.0
EVIL = "<script>alert(1)</script>"
VOID = {"meta", "br", "hr", "img", "input", "link", "wbr"}


# -- building records by hand, shaped as Monitoring.window_stats writes them -----------------


def percentiles(mean: float, std: float) -> list[float]:
    normal = NormalDist(mean, std)
    inner = [normal.inv_cdf(i / 100) for i in range(1, 100)]
    return [mean - 4 * std, *inner, mean + 4 * std]


def numeric(name: str, shift: float = 0.0, drifted: bool = False) -> dict[str, Any]:
    effect = 0.3 if drifted else 0.02
    return {
        "name": name,
        "kind": "numeric",
        "drifted": drifted,
        "method": "ks",
        "effect": effect,
        "threshold": 0.1,
        "p_value": 1e-12 if drifted else 0.8,
        "stats": {"ks": effect, "ks_p": 0.8, "wasserstein": 0.01, "psi": 0.01},
        "rows": 1000,
        "missing": 3,
        "out_of_range": 40 if drifted else 0,
        "new_categories": {},
        "reference": {"levels": [i / 100 for i in range(101)], "percentiles": percentiles(0, 1)},
        "live": {"levels": [i / 100 for i in range(101)], "percentiles": percentiles(shift, 1)},
    }


def categorical(name: str, drifted: bool = False) -> dict[str, Any]:
    live = {"red": 200, "green": 300, "blue": 400, "<b>violet</b>": 100} if drifted else None
    return {
        "name": name,
        "kind": "categorical",
        "drifted": drifted,
        "method": "js",
        "effect": 0.25 if drifted else 0.01,
        "threshold": 0.1,
        "p_value": 1e-9 if drifted else 0.6,
        "stats": {},
        "rows": 1000,
        "missing": 0,
        "out_of_range": 0,
        "new_categories": {"<b>violet</b>": 100} if drifted else {},
        "reference": {"count": 5000, "frequencies": {"red": 2500, "green": 1500, "blue": 1000}},
        "live": {"count": 1000, "frequencies": live or {"red": 480, "green": 310, "blue": 210}},
    }


def window(
    seq: int,
    *,
    rows: int = 1000,
    drifted: bool = False,
    profile: bool = True,
    labels: bool = True,
    versions: dict[str, int] | None = None,
    features: list[dict[str, Any]] | None = None,
) -> MonitorWindowRecord:
    start, end = T0 + 60 * (seq - 1), T0 + 60 * seq
    stats: dict[str, Any] = {"rows": rows, "start": start, "end": end, "drift": None}
    status = "no_data" if rows == 0 else ("drift" if drifted else "ok")
    if rows == 0:
        stats["health"] = {"requests": 0}
        stats["metrics"] = {"rows": 0.0}
        return MonitorWindowRecord(f"w{seq}", "m1", seq, start, end, 0, status, stats, end)
    versions = versions or {"3": rows}
    stats["versions"] = versions
    stats["health"] = {
        "requests": rows // 2,
        "requests_per_s": rows / 120,
        "p50_ms": 4.0 + seq % 3,
        "p95_ms": 9.0 + seq % 5,
        "p99_ms": 15.0 + seq % 7,
        "by_version": {v: {"rows": n, "p99_ms": 15.0 + int(v)} for v, n in versions.items()},
    }
    if profile:
        found = features or [
            numeric("age"),
            numeric("income", shift=1.0 if drifted else 0.0, drifted=drifted),
            categorical("colour", drifted=drifted),
            numeric(EVIL),
        ]
        drifted_names = [f["name"] for f in found if f["drifted"]]
        stats["drift"] = {
            "features": found,
            "prediction": numeric("prediction", shift=0.5 if drifted else 0.0, drifted=drifted),
            "rows": rows,
            "drifted": drifted_names,
            "drift_share": len(drifted_names) / len(found),
            "dataset_drift": len(drifted_names) / len(found) >= 0.5,
        }
    else:
        stats["drift_note"] = (
            "churn version 3 has no reference profile: register it with "
            "training_data= to compare windows with it"
        )
    if labels:
        by_version = {
            v: {"labelled": n // 10, "accuracy": 0.9, "f1": 0.8} for v, n in versions.items()
        }
        stats["performance"] = {
            "labelled": rows // 10,
            "accuracy": 0.7 if drifted else 0.92,
            "f1": 0.65 if drifted else 0.88,
            "by_version": by_version,
        }
    else:
        stats["performance"] = {"labelled": 0}
    stats["metrics"] = {"rows": float(rows), "drift_share": 0.5 if drifted else 0.0}
    return MonitorWindowRecord(f"w{seq}", "m1", seq, start, end, rows, status, stats, end)


MONITOR = MonitorRecord(
    id="m1",
    project_id="p1",
    name="churn & co",
    deployment="churn-prod",
    window_kind="rows",
    window_size=1000,
    thresholds={"share": 0.5, "ks": 0.1},
    rules=["drift: drift_share > 0.3 for 2 windows", "accuracy < 0.85"],
    state="alerting",
    detail="alert drift firing",
    cursor=T0,
    created_by="ana",
    created_at=T0,
)
ALERTS = [
    AlertRecord(
        "a1",
        "m1",
        "p1",
        "drift",
        "drift_share > 0.3 for 2 windows",
        "firing",
        0.5,
        4,
        T0 + 240,
        None,
        "e1",
    ),
    AlertRecord(
        "a2",
        "m1",
        "p1",
        "accuracy",
        "accuracy < 0.85",
        "resolved",
        0.7,
        2,
        T0 + 120,
        T0 + 180,
        "e2",
    ),
]


def standard_windows() -> list[MonitorWindowRecord]:
    return [
        window(1),
        window(2, rows=0),
        window(3, profile=False),
        window(4, drifted=True),
        window(5, drifted=True),
    ]


# -- checking pages -----------------------------------------------------------------------------


class Checker(HTMLParser):
    """Tags must nest and close; collects the text and each section's tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.text: list[str] = []
        self.sections: dict[str, list[str]] = {}
        self.section: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "section":
            self.section = dict(attrs).get("id")
            self.sections[self.section or ""] = []
        if self.section is not None:
            self.sections[self.section].append(tag)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        if tag == "section":
            self.section = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def check(page: str) -> Checker:
    checker = Checker()
    checker.feed(page)
    checker.close()
    assert checker.errors == []
    assert checker.stack == []
    assert page.startswith("<!doctype html>")
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower()
    assert not re.search(r"\s(src|href)=\"(?!#)", page)  # only links within the page
    return checker


# -- tests --------------------------------------------------------------------------------------


def test_a_chart_in_every_section_that_draws_one() -> None:
    checker = check(render_html(MONITOR, standard_windows(), ALERTS))
    for section in ("drift", "distributions", "performance", "health"):
        assert "svg" in checker.sections[section], section
    assert "table" in checker.sections["alerts"]
    assert "table" in checker.sections["windows"]


def test_the_header_names_the_monitor_and_highlights_firing_alerts() -> None:
    page = render_html(MONITOR, standard_windows(), ALERTS)
    header = page[page.index("<header>") : page.index("</header>")]
    assert "churn &amp; co" in header and "churn-prod" in header
    assert "every 1,000 predictions" in header
    assert "1 alert(s) firing" in header and "drift_share &gt; 0.3 for 2 windows" in header
    assert "accuracy &lt; 0.85" not in header.split('class="firing"')[1]  # resolved: not here


def test_drifted_features_are_named_first_with_their_verdict() -> None:
    page = render_html(MONITOR, standard_windows(), ALERTS)
    distributions = page[page.index('id="distributions"') : page.index('id="performance"')]
    cards = re.findall(r'<div class="card( drifted)?"><h3 title="([^"]*)"', distributions)
    assert [name for _, name in cards[:2]] == ["income", "colour"]
    assert all(flag for flag, _ in cards[:2]) and not any(flag for flag, _ in cards[2:4])
    assert cards[-1][1].startswith("prediction")
    assert "KS distance <b>0.3</b> ≥ threshold 0.1" in distributions
    assert "new values: &lt;b&gt;violet&lt;/b&gt;" in distributions
    assert "dataset drift</b>" in distributions
    # the drift chart marks the drifted windows and draws the share threshold
    drift = page[page.index('id="drift"') : page.index('id="distributions"')]
    assert "threshold 0.5" in drift and 'stroke-dasharray="5 4"' in drift
    assert drift.count('r="4.5"') == 2
    assert 'stroke="#111827"' in drift  # drifted heat-map cells are outlined


def test_every_user_string_is_escaped() -> None:
    page = render_html(MONITOR, standard_windows(), ALERTS)
    checker = check(page)
    assert EVIL not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>violet" not in page
    assert any(EVIL in text for text in checker.text)  # shown, as text


def test_no_windows_says_so() -> None:
    checker = check(render_html(MONITOR, [], []))
    text = " ".join(checker.text)
    assert "No windows yet" in text and "No alert has fired" in text
    assert "svg" not in {tag for tags in checker.sections.values() for tag in tags}


def test_a_latest_window_without_a_profile_shows_its_note_and_the_last_comparison() -> None:
    windows = [window(1, drifted=True), window(2, profile=False)]
    checker = check(render_html(MONITOR, windows, []))
    text = " ".join(checker.text)
    assert "The latest window with data, #2: churn version 3 has no reference profile" in text
    assert "Window #1" in text
    assert "1 window(s) without drift" in text
    assert "no profile" in text  # in the windows table


def test_windows_without_any_profile_or_labels() -> None:
    windows = [window(1, profile=False, labels=False), window(2, profile=False, labels=False)]
    checker = check(render_html(MONITOR, windows, []))
    text = " ".join(checker.text)
    assert "No window has been compared with a reference profile yet" in text
    assert "No labels yet" in text
    assert "svg" in checker.sections["health"]


def test_a_single_window_is_drawn_as_points() -> None:
    page = render_html(MONITOR, [window(1, drifted=True)], [])
    check(page)
    drift = page[page.index('id="drift"') : page.index('id="distributions"')]
    assert "<circle" in drift and "<polyline" not in drift


def test_several_versions_get_their_own_lines() -> None:
    canary = {"3": 900, "4": 100}
    page = render_html(MONITOR, [window(1, versions=canary), window(2, versions=canary)], [])
    check(page)
    assert "accuracy per version" in page and "Share of predictions per version" in page
    assert "p99 latency per version" in page
    assert "version 4" in page


def test_a_regressor_shows_errors() -> None:
    w = window(1)
    w.stats["performance"] = {"labelled": 50, "mae": 1.5, "rmse": 2.25, "by_version": {}}
    page = render_html(MONITOR, [w], [])
    check(page)
    assert "mae / rmse per window" in page and '<th class="num">rmse</th>' in page


def test_hundreds_of_windows_stay_small_and_readable() -> None:
    features = [numeric(f"f{i}", drifted=i < 3) for i in range(20)]
    windows = [window(seq, features=features) for seq in range(1, 501)]
    page = render_html(MONITOR, windows, ALERTS)
    check(page)
    assert len(page.encode()) < 2_000_000
    drift = page[page.index('id="drift"') : page.index('id="distributions"')]
    svgs = drift.split("<svg")[1:]
    axis_labels = re.findall(r'text-anchor="middle">#\d+</text>', svgs[0])
    assert 5 <= len(axis_labels) <= 11
    assert "each column is 5 windows" in drift
    assert "8 more feature(s)" in page  # 12 drawn of 20
