"""What every command shares: the store, the console, and how ids and times print.

With TREADLE_URL (or --url) set, `store()` reads through that server's API instead of
the home, so reading commands run the same code either way; commands that only work on
a local home ask for `local_store()`, which refuses clearly in that case.
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from typing import TYPE_CHECKING, Any

from treadle.config import Settings, load_settings
from treadle.errors import ConfigError
from treadle.store.protocols import StoreView

if TYPE_CHECKING:
    from treadle.client import Client
    from treadle.store import Store

_url: str | None = None


def use_url(url: str) -> None:
    """Work against the server at `url` (the --url option), whatever TREADLE_URL says."""
    global _url
    _url = url
    for cached in (settings, store, local_store, client, project_id):
        cached.cache_clear()


@cache
def settings() -> Settings:
    loaded = load_settings()
    return loaded.replace(url=_url) if _url else loaded


def remote() -> bool:
    return settings().url is not None


@cache
def client() -> Client:
    from treadle.client import Client

    s = settings()
    return Client(s.url, s.token, project=s.project)


@cache
def store() -> StoreView:
    """The records to read: the home's store, or the server's through its API."""
    if remote():
        from treadle.client import remote_store

        return remote_store(client(), settings())
    return local_store()


def require_local(command: str) -> None:
    """Refuse, in one line with a hint, a command that needs the home itself."""
    url = settings().url
    if url is not None:
        raise ConfigError(
            f"`treadle {command}` works on a local home only, and TREADLE_URL (or --url) "
            f"points at the server {url}",
            "unset TREADLE_URL (and drop --url) to use the local home",
        )


def require_remote(command: str) -> None:
    """Refuse, in one line with a hint, a command that only means something on a server."""
    if settings().url is None:
        raise ConfigError(
            f"`{command}` needs a treadle server: users, tokens and members live there",
            "set TREADLE_URL and TREADLE_TOKEN (or pass --url), e.g. to `treadle up`",
        )


@cache
def local_store() -> Store:
    """The home's own store, for commands that run, serve or change things on this machine."""
    from treadle.store import open_store

    if remote():
        raise ConfigError(
            "this command works on a local home only, not through a server",
            "unset TREADLE_URL (and drop --url) to use the local home",
        )
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
