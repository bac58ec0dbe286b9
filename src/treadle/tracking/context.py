"""The active run: where `log_metric` and friends write, set per step or per script."""

from __future__ import annotations

import contextvars
import dataclasses
import threading
import time
from typing import Any

from treadle.errors import InvalidInputError
from treadle.store import Store
from treadle.store.records import MetricRecord

FLUSH_ROWS = 2000
FLUSH_SECONDS = 2.0


class MetricBuffer:
    """Collects metric rows in memory and writes them in batches.

    A training loop may log every iteration: each call is an append; the rows reach
    the store every FLUSH_ROWS rows or FLUSH_SECONDS seconds, and when the step or
    run ends.
    """

    def __init__(self, store: Store, run_id: str, step_run_id: str | None) -> None:
        self._store = store
        self._run_id = run_id
        self._step_run_id = step_run_id
        self._rows: list[MetricRecord] = []
        self._next_step: dict[str, int] = {}
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()

    def add(self, key: str, value: float, step: int | None) -> None:
        now = time.time()
        with self._lock:
            if step is None:
                step = self._next_step.get(key, 0)
            self._next_step[key] = step + 1
            self._rows.append(MetricRecord(self._run_id, key, value, step, now, self._step_run_id))
            due = (
                len(self._rows) >= FLUSH_ROWS
                or time.monotonic() - self._last_flush >= FLUSH_SECONDS
            )
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            rows, self._rows = self._rows, []
            self._last_flush = time.monotonic()
        if rows:
            self._store.tracking.log_metrics(rows)


@dataclasses.dataclass
class ActiveRun:
    store: Store
    run_id: str
    project_id: str
    step_run_id: str | None
    node: str | None
    metrics: MetricBuffer
    input_hashes: tuple[str, ...] = ()
    """sha256 of every artifact the current step read (what a model was trained on)."""

    @classmethod
    def open(
        cls,
        store: Store,
        run_id: str,
        project_id: str,
        step_run_id: str | None = None,
        node: str | None = None,
        input_hashes: tuple[str, ...] = (),
    ) -> ActiveRun:
        buffer = MetricBuffer(store, run_id, step_run_id)
        return cls(store, run_id, project_id, step_run_id, node, buffer, input_hashes)


_active: contextvars.ContextVar[ActiveRun | None] = contextvars.ContextVar(
    "treadle_active_run", default=None
)


def active() -> ActiveRun | None:
    return _active.get()


def activate(run: ActiveRun) -> contextvars.Token[ActiveRun | None]:
    return _active.set(run)


def deactivate(token: contextvars.Token[ActiveRun | None]) -> None:
    _active.reset(token)


def as_metric_value(key: str, value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"metric {key!r} must be a number, got {type(value).__name__} {value!r}"
        ) from None
