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
        flush_rows: int = 10_000,
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
        # Everything the writer will import, imported now: a first import in the writer
        # thread (pyarrow brings in pandas at its first numpy conversion) would hold the
        # interpreter for a third of a second while requests wait.
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet

        pa.array(np.zeros(1))
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
        queue = self._queue
        while queue:
            pop = queue.popleft
            self._write([pop() for _ in range(min(len(queue), self.flush_rows))])

    def _write(self, items: list[tuple[Any, ...]]) -> None:
        """One segment per distinct column set and signature (a new version may bring a
        new one). The writer shares the interpreter with the request loop, so what it
        does per row is kept to list comprehensions and single numpy/Arrow calls."""
        groups: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
        columns: Any = None
        dtypes: Any = None
        group: list[tuple[Any, ...]] = []
        for item in items:
            # requests of one signature come in runs; a key is made only where a run starts
            if item[5] != columns or item[8] is not dtypes:
                columns, dtypes = item[5], item[8]
                group = groups.setdefault((tuple(columns), id(dtypes)), [])
            group.append(item)
        for (names, _), same in groups.items():
            self._write_group(names, same)

    def _write_group(self, columns: tuple[str, ...], items: list[tuple[Any, ...]]) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        dtypes: Mapping[str, str] = items[0][8] or {}
        rows = [row for item in items for row in item[6]]
        outputs = [out for item in items for out in item[7]]
        counts = [len(item[6]) for item in items]
        # per-request values, spread over the request's rows when a request has several
        spread = None if len(rows) == len(items) else np.repeat(np.arange(len(items)), counts)

        def per_request(index: int, type_: Any) -> Any:
            column = pa.array([item[index] for item in items], type_)
            return column if spread is None else column.take(spread)

        data: dict[str, Any] = {
            "ts": per_request(0, pa.float64()),
            "request_id": per_request(1, pa.string()),
            "model": per_request(2, pa.string()),
            "version": per_request(3, pa.int64()),
            "latency_ms": per_request(4, pa.float64()),
            "prediction": _column(outputs, dtypes.get("prediction")),
        }
        matrix = _numeric_matrix(rows, columns, dtypes)
        if matrix is not None:  # one conversion, then each column a contiguous slice
            for name, values in zip(columns, np.ascontiguousarray(matrix.T), strict=True):
                column = pa.array(values)
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
        # dictionary pages pay off for text (model names, categories), not for measurements
        text = [f.name for f in table.schema if pa.types.is_string(f.type)]
        pq.write_table(table, tmp, use_dictionary=text)
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
