"""The prediction log: every prediction, written in batches to Parquet segments.

The request path only appends to a bounded in-memory queue; when the queue is full the
record is dropped and counted, so logging never blocks or fails a prediction. A writer
thread turns the queue into `<folder>/<YYYY-MM-DD>/<time>-<n>.parquet` files, each
written to a temporary name and renamed, so a reader never sees half a segment.
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SCHEMA_FIELDS = ("ts", "request_id", "model", "version", "latency_ms", "prediction")
INPUT_PREFIX = "input."


_ARROW_TYPES = {
    "float64": "float64",
    "float32": "float64",
    "int64": "int64",
    "int32": "int64",
    "bool": "bool_",
    "string": "string",
}


def _column(values: list[Any], dtype: str | None = None) -> Any:
    """An Arrow column of the signature's type; else typed as the values allow; else JSON
    text."""
    import pyarrow as pa

    if dtype in _ARROW_TYPES:
        try:
            return pa.array(values, getattr(pa, _ARROW_TYPES[dtype])())
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([json.dumps(v, default=str) for v in values], pa.string())


_NUMERIC = {"float64", "float32", "int64", "int32"}


def _numeric_matrix(rows: list[Any], columns: tuple[str, ...], dtypes: Mapping[str, str]) -> Any:
    """All rows as one float64 matrix when every column is numeric by the signature (and
    the values agree), else None."""
    if not rows or not columns or any(dtypes.get(c) not in _NUMERIC for c in columns):
        return None
    import numpy as np

    try:
        matrix = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if matrix.ndim != 2 or matrix.shape[1] != len(columns):
        return None
    ints = [j for j, c in enumerate(columns) if dtypes[c] in ("int64", "int32")]
    if ints and not np.all(np.mod(matrix[:, ints], 1) == 0):
        return None  # a fraction in an integer column: typed one by one, as before
    return matrix


class PredictionLog:
    def __init__(
        self,
        folder: Path,
        *,
        max_queue: int = 50_000,
        flush_rows: int = 2_000,
        flush_seconds: float = 0.5,
    ) -> None:
        self.folder = folder
        self.max_queue = max_queue
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.dropped = 0
        self.written = 0
        self.segments = 0
        self._queue: collections.deque[tuple[Any, ...]] = collections.deque()
        # imported now, not at the first flush: a first import in the writer thread would
        # hold the interpreter for a third of a second while requests wait
        import pyarrow.parquet  # noqa: F401

        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="treadle-predlog", daemon=True)
        self._thread.start()

    def append(
        self,
        request_id: str,
        model: str,
        version: int,
        latency_ms: float,
        columns: list[str],
        rows: list[list[Any]],
        outputs: list[Any],
        dtypes: Mapping[str, str] | None = None,
    ) -> None:
        """Queue one request's predictions; never blocks. `dtypes` (column -> signature
        dtype, "prediction" for the output) fixes the columns' types in the log, so every
        segment of a model reads back with one schema."""
        if len(self._queue) >= self.max_queue:
            self.dropped += 1
            return
        self._queue.append(
            (time.time(), request_id, model, version, latency_ms, columns, rows, outputs, dtypes)
        )
        if len(self._queue) >= self.flush_rows:
            self._wake.set()

    @property
    def depth(self) -> int:
        return len(self._queue)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()
        self.flush()

    def flush(self) -> None:
        while self._queue:
            items: list[tuple[Any, ...]] = []
            while self._queue and len(items) < self.flush_rows:
                items.append(self._queue.popleft())
            self._write(items)

    def _write(self, items: list[tuple[Any, ...]]) -> None:
        """One segment per distinct column set (a new version may bring a new signature).
        Inputs become typed `input.<column>` columns, built column-wise so the thread
        holds the interpreter lock for as short a time as it can."""
        groups: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
        for item in items:
            key = (tuple(item[5]), tuple(sorted((item[8] or {}).items())))
            groups.setdefault(key, []).append(item)
        for (columns, _), group in groups.items():
            self._write_group(columns, group)

    def _write_group(self, columns: tuple[str, ...], items: list[tuple[Any, ...]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        ts, rids, models, versions, latencies, rows, outputs = [], [], [], [], [], [], []
        dtypes: Mapping[str, str] = items[0][8] or {}
        for t, rid, model, version, latency, _, item_rows, item_outputs, _ in items:
            n = len(item_rows)
            ts += [t] * n
            rids += [rid] * n
            models += [model] * n
            versions += [version] * n
            latencies += [latency] * n
            rows += item_rows
            outputs += item_outputs
        data: dict[str, Any] = {
            "ts": pa.array(ts, pa.float64()),
            "request_id": pa.array(rids, pa.string()),
            "model": pa.array(models, pa.string()),
            "version": pa.array(versions, pa.int64()),
            "latency_ms": pa.array(latencies, pa.float64()),
            "prediction": _column(outputs, dtypes.get("prediction")),
        }
        matrix = _numeric_matrix(rows, columns, dtypes)
        if matrix is not None:  # one C-speed conversion instead of a Python list per column
            for j, name in enumerate(columns):
                column = pa.array(matrix[:, j])
                if _ARROW_TYPES.get(dtypes.get(name, ""), "float64") == "int64":
                    column = column.cast(pa.int64())
                data[f"{INPUT_PREFIX}{name}"] = column
        else:
            for name, values in zip(columns, zip(*rows, strict=True), strict=True):
                data[f"{INPUT_PREFIX}{name}"] = _column(list(values), dtypes.get(name))
        table = pa.table(data)
        day = time.strftime("%Y-%m-%d", time.gmtime(items[0][0]))
        target_dir = self.folder / day
        target_dir.mkdir(parents=True, exist_ok=True)
        name = f"{time.strftime('%H%M%S', time.gmtime())}-{os.getpid()}-{self.segments:06d}"
        tmp = target_dir / f".{name}.parquet.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, target_dir / f"{name}.parquet")
        self.segments += 1
        self.written += table.num_rows

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)


def read_predictions(folder: Path) -> Any:
    """Every logged prediction under `folder`, as one pyarrow table (for monitoring)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(p for p in folder.rglob("*.parquet") if not p.name.startswith("."))
    if not files:
        return pa.table({f: [] for f in SCHEMA_FIELDS})
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")
