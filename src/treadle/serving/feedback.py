"""Labels that arrive after the prediction: `POST /feedback` on the model server.

Each label names the request it is for (`request_id`, and `row` for requests of several
rows). The server checks the id against the requests it answered recently and the label
against the model's output type, then queues it; a writer thread writes Parquet segments
(`<folder>/<YYYY-MM-DD>/<time>-<pid>-<n>.parquet`, renamed into place whole) that
monitors join with the prediction log on (request_id, row).
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

NUMERIC = {"float64", "float32", "int64", "int32", "bool"}
RECENT = 200_000
"""Request ids remembered for checking feedback (older ones are refused as unknown)."""


class FeedbackError(Exception):
    def __init__(self, status: int, message: str, field: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field, self.hint = status, message, field, hint


class Recent:
    """The last RECENT request ids answered, with their model version and row count."""

    def __init__(self, size: int = RECENT) -> None:
        self.size = size
        self._ids: collections.OrderedDict[str, tuple[int, int]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def add(self, request_id: str, version: int, rows: int) -> None:
        with self._lock:
            self._ids[request_id] = (version, rows)
            if len(self._ids) > self.size:
                self._ids.popitem(last=False)

    def get(self, request_id: str) -> tuple[int, int] | None:
        with self._lock:
            return self._ids.get(request_id)


def check_label(value: Any, dtype: str | None, field: str) -> Any:
    """The label, if it is of the model's output type."""
    if value is None:
        raise FeedbackError(
            422, f"{field} is missing", field, 'send {"request_id": ..., "label": ...}'
        )
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if dtype in NUMERIC and not number and not (dtype == "bool" and isinstance(value, bool)):
        raise FeedbackError(
            422, f"{field} must be a number (the model predicts {dtype}), not {value!r}", field
        )
    elif dtype is not None and not isinstance(value, str | int | float | bool):
        raise FeedbackError(422, f"{field} must be a single value, not {value!r}", field)
    return value


class FeedbackLog:
    def __init__(self, folder: Path, flush_seconds: float = 0.5, max_queue: int = 100_000) -> None:
        self.folder = folder
        self.flush_seconds = flush_seconds
        self.max_queue = max_queue
        self.written = 0
        self.dropped = 0
        self._queue: collections.deque[tuple[float, str, int, int, str]] = collections.deque()
        self._segments = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="treadle-feedback", daemon=True)
        self._thread.start()

    def append(self, request_id: str, row: int, version: int, label: Any) -> None:
        if len(self._queue) >= self.max_queue:
            self.dropped += 1
            return
        self._queue.append((time.time(), request_id, row, version, json.dumps(label)))

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()
        self.flush()

    def flush(self) -> None:
        items = []
        while self._queue:
            items.append(self._queue.popleft())
        if not items:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = list(zip(*items, strict=True))
        table = pa.table(
            {
                "ts": pa.array(columns[0], pa.float64()),
                "request_id": pa.array(columns[1], pa.string()),
                "row": pa.array(columns[2], pa.int64()),
                "version": pa.array(columns[3], pa.int64()),
                "label": pa.array(columns[4], pa.string()),
            }
        )
        day = self.folder / time.strftime("%Y-%m-%d", time.gmtime(items[0][0]))
        day.mkdir(parents=True, exist_ok=True)
        name = f"{time.strftime('%H%M%S', time.gmtime())}-{os.getpid()}-{self._segments:06d}"
        tmp = day / f".{name}.parquet.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, day / f"{name}.parquet")
        self._segments += 1
        self.written += table.num_rows

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
