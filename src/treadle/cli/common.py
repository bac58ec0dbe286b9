"""What every command shares: the store, the console, and how ids and times print."""

from __future__ import annotations

import datetime as dt
from functools import cache
from typing import Any

from treadle.config import Settings, load_settings
from treadle.store import Store, open_store


@cache
def settings() -> Settings:
    return load_settings()


@cache
def store() -> Store:
    return open_store(settings())


@cache
def project_id() -> str:
    s = settings()
    return store().projects.ensure_project(s.project, s.user).id


@cache
def console() -> Any:
    import sys

    from rich.console import Console

    # piped output keeps full rows instead of wrapping at 80 columns
    return Console(highlight=False, width=None if sys.stdout.isatty() else 150)


@cache
def err_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def short(id_: str | None) -> str:
    return id_[:8] if id_ else "-"


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 120:
        return f"{value:.1f}s"
    return f"{value / 60:.1f}m"


_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 40) -> str:
    """A metric's history as a row of bars: the shape of a curve in one line."""
    finite = [v for v in values if v == v and abs(v) != float("inf")]
    if len(finite) < 2:
        return ""
    if len(finite) > width:  # keep the last value of each of `width` buckets
        step = len(finite) / width
        finite = [finite[min(len(finite) - 1, int((i + 1) * step) - 1)] for i in range(width)]
    low, high = min(finite), max(finite)
    span = (high - low) or 1.0
    return "".join(_BARS[int((v - low) / span * (len(_BARS) - 1))] for v in finite)


STATE_STYLE = {
    "SUCCEEDED": "green",
    "CACHED": "cyan",
    "RUNNING": "yellow",
    "PENDING": "dim",
    "FAILED": "red",
    "CANCELLED": "magenta",
    "SKIPPED": "dim",
}


def styled_state(state: str) -> str:
    return f"[{STATE_STYLE.get(state, 'white')}]{state}[/]"
