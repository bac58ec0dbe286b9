"""Showing a run as it goes: a live table on a terminal, one line per event elsewhere."""

from __future__ import annotations

import sys
import time
from typing import Any

from treadle.cli.common import seconds, short
from treadle.engine import Event

_MARK = {
    "step_started": ("…", "yellow", "running"),
    "step_finished": ("✓", "green", "done"),
    "step_cached": ("↺", "cyan", "cached"),
    "step_reused": ("↺", "cyan", "reused"),
    "step_retrying": ("↻", "yellow", "retrying"),
    "step_failed": ("✗", "red", "failed"),
    "step_skipped": ("-", "dim", "skipped"),
}


class Progress:
    """An event sink for the runner that draws what happens."""

    def __init__(self, console: Any, live: bool | None = None) -> None:
        self.console = console
        self.live_enabled = sys.stdout.isatty() if live is None else live
        self.rows: dict[str, dict[str, Any]] = {}
        self.counts: dict[str, int] = {}
        self._live: Any = None
        self.run_id = ""
        self.total = 0

    def __enter__(self) -> Progress:
        if self.live_enabled:
            from rich.live import Live

            self._live = Live(
                self._table(), console=self.console, refresh_per_second=8, transient=False
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.update(self._table())
            self._live.__exit__(*exc)

    def _table(self) -> Any:
        from rich.table import Table

        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column(width=1)
        table.add_column()
        table.add_column()
        table.add_column(style="dim")
        for unit, row in self.rows.items():
            mark, style, label = _MARK[row["kind"]]
            spent = row.get("spent")
            if row["kind"] == "step_started":
                spent = time.monotonic() - row["t0"]
            table.add_row(
                f"[{style}]{mark}[/]",
                unit,
                f"[{style}]{label}[/]",
                (seconds(spent) if spent is not None else "")
                + (f"  {row['message']}" if row.get("message") else ""),
            )
        done = sum(self.counts.get(k, 0) for k in ("step_finished", "step_cached", "step_reused"))
        table.caption = f"run {short(self.run_id)}: {done}/{self.total} steps"
        return table

    def __call__(self, event: Event) -> None:
        if event.total is not None:
            self.total = event.total
        if event.kind == "run_started":
            self.run_id = event.run_id
            if not self.live_enabled:
                self.console.print(f"run {short(event.run_id)} started: {event.message}")
            return
        if event.kind == "notice":
            self.console.print(f"[yellow]note:[/] {event.message}")
            return
        if event.kind not in _MARK or event.unit is None:
            return
        self.counts[event.kind] = self.counts.get(event.kind, 0) + 1
        row = self.rows.setdefault(event.unit, {"t0": time.monotonic()})
        if event.kind == "step_started":
            row["t0"] = time.monotonic()
        elif event.kind in ("step_finished", "step_failed"):
            row["spent"] = time.monotonic() - row["t0"]
        row["kind"] = event.kind
        row["message"] = (
            event.message
            if event.kind in ("step_failed", "step_retrying")
            else (f"from run {short(event.message)}" if event.kind == "step_cached" else None)
        )
        if self._live is not None:
            self._live.update(self._table())
        elif event.kind != "step_started":
            mark, style, label = _MARK[event.kind]
            extra = f"  {row['message']}" if row.get("message") else ""
            spent = (
                f" {seconds(row['spent'])}"
                if "spent" in row and event.kind in ("step_finished", "step_failed")
                else ""
            )
            self.console.print(f"  [{style}]{mark} {event.unit}[/] {label}{spent}{extra}")
