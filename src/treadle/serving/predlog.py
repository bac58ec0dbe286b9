"""The prediction log: every prediction, in Parquet segments that monitors read.

A model server's request loop must lose as little as possible to the log, and a thread
of its own that converts rows to Arrow would share the interpreter lock with it: every
system call of the request loop would hand the lock over and wait to get it back. So the
server only appends each request as one JSON line (orjson, about a microsecond) to an
in-memory buffer; a small thread writes the buffer out every `flush_seconds` as a spool
file (`<folder>/.spool/<name>.jsonl`, written under a temporary name and renamed, so it
is whole or absent). A converter *process* turns each spool file into the segment
`<folder>/<YYYY-MM-DD>/<name>.parquet` (again through a temporary name) and only then
deletes the spool file; converting one twice writes the same segment, so a converter
killed halfway loses and duplicates nothing: the next one picks up where it stopped.
When the buffer is full (the disk stalls) a record is dropped and counted; the log
never blocks or fails a prediction.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

SCHEMA_FIELDS = ("ts", "request_id", "model", "version", "latency_ms", "prediction")
INPUT_PREFIX = "input."
SPOOL = ".spool"


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

    arrow_type = _ARROW_TYPES.get(dtype or "")
    # pyarrow would cut 2.5 to 2 in an integer column: a fraction keeps the column float
    if arrow_type is not None and not (arrow_type == "int64" and _fractions(values)):
        try:
            return pa.array(values, getattr(pa, arrow_type)())
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            pass
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.array([json.dumps(v, default=str) for v in values], pa.string())


_NUMERIC = {"float64", "float32", "int64", "int32"}


def _fractions(values: list[Any]) -> bool:
    return any(isinstance(v, float) and not v.is_integer() for v in values)


def _numeric_matrix(rows: list[Any], columns: tuple[str, ...], dtypes: Mapping[str, str]) -> Any:
    """All rows as one float64 matrix when every column is numeric by the signature (and
    the values are numbers), else None."""
    if not rows or not columns or any(dtypes.get(c) not in _NUMERIC for c in columns):
        return None
    import numpy as np

    try:
        matrix = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if matrix.ndim != 2 or matrix.shape[1] != len(columns):
        return None
    return matrix


class PredictionLog:
    """The server's side of the log: appends in the request loop, spool files behind it,
    and the converter process it starts and stops."""

    def __init__(
        self,
        folder: Path,
        *,
        max_queue: int = 200_000,
        flush_rows: int = 50_000,
        flush_seconds: float = 0.5,
        convert: bool = True,
    ) -> None:
        import orjson

        self.folder = folder
        self.spool = folder / SPOOL
        self.spool.mkdir(parents=True, exist_ok=True)
        self.max_queue = max_queue
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.dropped = 0
        self.spooled = 0
        """Rows in spool files (converted or not)."""
        self._dumps = orjson.dumps
        self._options = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE
        # the lines of the requests not yet spooled, in one growing buffer: a bytes object
        # per request kept for half a second would be hundreds of allocations the heap
        # gives back to the system and takes again at every spool file
        self._buffer = bytearray()
        self._requests = 0
        self._rows = 0
        self._buffer_lock = threading.Lock()
        """Held by the request loop for one append, by the writer to take the buffer."""
        self._signature: tuple[Any, ...] | None = None
        """The signature of the last request appended."""
        self._header = b""
        """Its header line, which starts every spool file."""
        self._lock = threading.Lock()
        self._files = 0
        self._pending: list[tuple[Path, int]] = []
        """Spool files written and rows in each, until the converter has taken them."""
        self._converted = 0
        self._converter: subprocess.Popen[bytes] | None = None
        if convert:
            self._converter = _start_converter(folder, min(flush_seconds, 0.2))
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
        if self._requests >= self.max_queue:
            self.dropped += 1
            return
        record = {"t": time.time(), "r": request_id, "v": version, "l": latency_ms}
        record["x"], record["y"] = rows, outputs
        try:
            line = self._dumps(record, option=self._options)
        except TypeError:  # a value JSON cannot carry: the request is left out of the log
            record["x"] = None
            line = self._dumps(record, default=str, option=self._options)
        with self._buffer_lock:
            signature = self._signature
            if (
                signature is None
                or signature[1] is not dtypes
                or signature[0] != model
                or signature[2] != columns
            ):
                header = {"model": model, "columns": columns, "dtypes": dtypes or {}}
                self._header = self._dumps(header, option=self._options)
                self._signature = (model, dtypes, list(columns))
                self._buffer += self._header
            self._buffer += line
            self._requests += 1
            self._rows += len(rows)
        if self._requests >= self.flush_rows:
            self._wake.set()

    @property
    def depth(self) -> int:
        """Requests not yet in a spool file."""
        return self._requests

    @property
    def written(self) -> int:
        """Rows in Parquet segments (spool files the converter has finished)."""
        with self._lock:
            left = []
            for path, rows in self._pending:
                if path.exists():
                    left.append((path, rows))
                else:
                    self._converted += rows
            self._pending = left
            return self._converted

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()
            if self._converter is not None and self._converter.poll() is not None:
                # the converter died; a new one takes over the spool where it stopped
                self._converter = _start_converter(self.folder, min(self.flush_seconds, 0.2))
        self.flush()

    def flush(self) -> None:
        """Write what is queued as one spool file."""
        with self._lock:  # one writer at a time (the thread, or close and tests)
            with self._buffer_lock:
                if not self._requests:
                    return
                # every spool file starts with the signature of its first request
                data, self._buffer = self._buffer, bytearray(self._header)
                rows, self._requests, self._rows = self._rows, 0, 0
            self._files += 1
            # the time the segment is written, first: monitors skip segments older than
            # a window by their name, and read a day's segments in log order
            now = time.time()
            clock = time.strftime("%H%M%S", time.gmtime(now))
            name = f"{clock}-{int(now * 1e6) % 1_000_000:06d}-{os.getpid()}-{self._files:06d}"
            target = self.spool / f"{name}.jsonl"
            tmp = self.spool / f".{name}.jsonl.tmp"
            try:
                with tmp.open("wb") as f:
                    f.write(data)
                os.replace(tmp, target)
            except OSError:
                self.dropped += rows
                tmp.unlink(missing_ok=True)
                return
            self.spooled += rows
            self._pending.append((target, rows))

    def close(self) -> None:
        """Write out the buffer and wait until every spool file is a segment."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        converter = self._converter
        if converter is not None and converter.poll() is None:
            assert converter.stdin is not None
            converter.stdin.close()  # the converter finishes the spool, then exits
            try:
                converter.wait(timeout=60)
            except subprocess.TimeoutExpired:
                converter.kill()
                converter.wait()
        convert_spool(self.folder)  # whatever a dead converter left
        _ = self.written


def _start_converter(folder: Path, poll: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "treadle.serving.predlog", str(folder), str(poll)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C meant for the server does not cut a segment short
    )


def _spool_files(folder: Path) -> list[Path]:
    spool = folder / SPOOL
    if not spool.is_dir():
        return []
    return sorted(p for p in spool.iterdir() if p.suffix == ".jsonl" and not p.name.startswith("."))


HEADER_START = b'{"model"'
"""How a signature header's line starts (a request's line starts with `{"t"`)."""


def _runs(data: bytes) -> Iterator[tuple[dict[str, Any], bytes]]:
    """The runs of one signature in a spool file: (header, the request lines after it)."""
    import orjson

    starts = [0] if data.startswith(HEADER_START) else []
    at = data.find(b"\n" + HEADER_START)
    while at >= 0:
        starts.append(at + 1)
        at = data.find(b"\n" + HEADER_START, at + 1)
    for i, begin in enumerate(starts):
        stop = starts[i + 1] if i + 1 < len(starts) else len(data)
        newline = data.find(b"\n", begin, stop)
        if newline < 0:
            continue  # a header with no requests after it
        header = orjson.loads(data[begin:newline])
        body = data[newline + 1 : stop]
        if body and not body.isspace():
            yield header, body


def convert_spool(folder: Path) -> int:
    """Turn every finished spool file under `folder` into segments; the rows converted."""
    done = 0
    for path in _spool_files(folder):
        try:
            for segment, (header, body) in enumerate(_runs(path.read_bytes())):
                table = _arrow_table(header, body)
                if table is None:  # types the columnar reader cannot take: line by line
                    table = _python_table(header, body)
                if table is not None:
                    done += _write_segment(folder, f"{path.stem}-{segment}", table)
        except OSError:
            raise  # the disk: the file stays, and the next pass tries it again
        except Exception as exc:  # one file that cannot be converted must not stop the rest
            # kept beside the spool (the converter skips dot files) for a person to look at
            failed = path.with_name(f".{path.stem}.failed")
            path.replace(failed)
            print(
                f"treadle: prediction log: {path.name} could not be converted "
                f"({type(exc).__name__}: {exc}); kept as {failed}",
                file=sys.stderr,
            )
            continue
        path.unlink(missing_ok=True)
    return done


def _arrow_table(header: Mapping[str, Any], body: bytes) -> Any:
    """A run's segment read by pyarrow's JSON reader in one pass (a few microseconds a
    request, against tens line by line in Python), or None where the signature or the
    values need the line-by-line reader: inputs that are not all numbers, a prediction of
    no declared type, rows of the wrong width, values of another type."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj

    columns: list[str] = list(header.get("columns") or [])
    dtypes: Mapping[str, str] = header.get("dtypes") or {}
    prediction = _ARROW_TYPES.get(dtypes.get("prediction", ""))
    if not columns or prediction is None or any(dtypes.get(c) not in _NUMERIC for c in columns):
        return None
    schema = pa.schema(
        [
            ("t", pa.float64()),
            ("r", pa.string()),
            ("v", pa.int64()),
            ("l", pa.float64()),
            ("x", pa.list_(pa.list_(pa.float64()))),
            ("y", pa.list_(getattr(pa, prediction)())),
        ]
    )
    try:
        table = pj.read_json(
            pa.BufferReader(body),
            # one block: a request's line never straddles two; one thread: background work
            read_options=pj.ReadOptions(use_threads=False, block_size=max(len(body), 1 << 20)),
            parse_options=pj.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior="error"
            ),
        )
        table = table.filter(pc.is_valid(table.column("x")))  # requests JSON could not carry
        if table.num_rows == 0:
            return None
        requests = table.column("x").combine_chunks()
        per_request = pc.list_value_length(requests).to_numpy(zero_copy_only=False)
        rows = requests.flatten()
        widths = pc.list_value_length(rows)
        if rows.null_count or pc.min_max(widths).as_py() != {
            "min": len(columns),
            "max": len(columns),
        }:
            return None
        values = rows.flatten()
        outputs = table.column("y").combine_chunks().flatten()
        if len(outputs) != len(rows):  # (a missing input value reads as NaN, as below)
            return None
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    matrix = values.to_numpy(zero_copy_only=False).reshape(len(rows), len(columns))
    spread = (
        None if len(rows) == table.num_rows else np.repeat(np.arange(table.num_rows), per_request)
    )

    def each_row(name: str) -> Any:
        column = table.column(name).combine_chunks()
        return column if spread is None else column.take(spread)

    data: dict[str, Any] = {
        "ts": each_row("t"),
        "request_id": each_row("r"),
        "model": pa.array([header.get("model", "")] * len(rows), pa.string()),
        "version": each_row("v"),
        "latency_ms": each_row("l"),
        "prediction": outputs,
    }
    if not _input_columns(data, columns, dtypes, matrix):
        return None
    return pa.table(data)


def _input_columns(
    data: dict[str, Any], columns: list[str], dtypes: Mapping[str, str], matrix: Any
) -> bool:
    """The inputs, each a contiguous slice of the float matrix, typed as the signature
    says; False when an integer column holds a fraction or a number beyond int64."""
    import numpy as np
    import pyarrow as pa

    ints = [j for j, c in enumerate(columns) if dtypes.get(c) in ("int64", "int32")]
    if ints:
        values = matrix[:, ints]
        # a whole number too big for int64 (1e300 passes as "whole") stays float as well
        if not (np.all(np.mod(values, 1) == 0) and np.all(np.abs(values) < 2.0**63)):
            return False
    for column_name, values in zip(columns, np.ascontiguousarray(matrix.T), strict=True):
        column = pa.array(values)
        if _ARROW_TYPES.get(dtypes.get(column_name, ""), "float64") == "int64":
            column = column.cast(pa.int64())
        data[f"{INPUT_PREFIX}{column_name}"] = column
    return True


def _python_table(header: Mapping[str, Any], body: bytes) -> Any:
    """A run's segment read line by line: any signature, any JSON value."""
    import numpy as np
    import orjson
    import pyarrow as pa

    columns = tuple(header.get("columns") or ())
    dtypes: Mapping[str, str] = header.get("dtypes") or {}
    model = header.get("model", "")
    items: list[tuple[Any, ...]] = []
    for raw in body.splitlines():
        if not raw:
            continue
        record = orjson.loads(raw)
        if isinstance(record, dict):
            item = (record["t"], record["r"], record["v"], record["l"], record["x"], record["y"])
        else:  # a spool file written before requests were JSON objects
            item = tuple(record)
        if item[4] is not None:  # else a request whose values JSON could not carry
            items.append(item)
    if not items:
        return None
    rows = [row for item in items for row in item[4]]
    outputs = [out for item in items for out in item[5]]
    counts = [len(item[4]) for item in items]
    # per-request values, spread over the request's rows when a request has several
    spread = None if len(rows) == len(items) else np.repeat(np.arange(len(items)), counts)

    def per_request(values: list[Any], type_: Any) -> Any:
        column = pa.array(values, type_)
        return column if spread is None else column.take(spread)

    data: dict[str, Any] = {
        "ts": per_request([item[0] for item in items], pa.float64()),
        "request_id": per_request([item[1] for item in items], pa.string()),
        "model": pa.array([model] * len(rows), pa.string()),
        "version": per_request([item[2] for item in items], pa.int64()),
        "latency_ms": per_request([item[3] for item in items], pa.float64()),
        "prediction": _column(outputs, dtypes.get("prediction")),
    }
    matrix = _numeric_matrix(rows, columns, dtypes)
    if matrix is None or not _input_columns(data, list(columns), dtypes, matrix):
        for column_name, values in zip(columns, zip(*rows, strict=True), strict=True):
            data[f"{INPUT_PREFIX}{column_name}"] = _column(list(values), dtypes.get(column_name))
    return pa.table(data)


def _write_segment(folder: Path, name: str, table: Any) -> int:
    """`table` as the segment `<folder>/<day>/<name>.parquet`, whole or not at all."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    day = time.strftime("%Y-%m-%d", time.gmtime(table.column("ts")[0].as_py()))
    target_dir = folder / day
    target_dir.mkdir(parents=True, exist_ok=True)
    tmp = target_dir / f".{name}-{os.getpid()}.parquet.tmp"
    # dictionary pages pay off for repeated text (model names, categories), not for
    # measurements or request ids, which are all different
    text = [f.name for f in table.schema if pa.types.is_string(f.type) and f.name != "request_id"]
    pq.write_table(table, tmp, use_dictionary=text)
    os.replace(tmp, target_dir / f"{name}.parquet")
    return int(table.num_rows)


def _converter_main(folder: Path, poll: float) -> None:
    """The converter process: convert the spool every `poll` seconds until the server
    closes our stdin, then once more and exit."""
    # background work: on a machine the server keeps busy, converting waits for idle time
    # rather than taking it from requests (the buffer and spool absorb the delay)
    os.nice(19)
    # everything conversion imports, now, while the server starts: pyarrow's first numpy
    # conversion imports pandas, half a second of CPU better not spent under load
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet

    pa.array(np.zeros(1))
    stdin = sys.stdin.fileno()
    while True:
        convert_spool(folder)
        ready, _, _ = select.select([stdin], [], [], poll)
        if ready and not os.read(stdin, 65536):
            break
    convert_spool(folder)


def read_predictions(folder: Path) -> Any:
    """Every logged prediction under `folder`, as one pyarrow table (for monitoring)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(p for p in folder.rglob("*.parquet") if not p.name.startswith("."))
    if not files:
        return pa.table({f: [] for f in SCHEMA_FIELDS})
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")


if __name__ == "__main__":
    _converter_main(Path(sys.argv[1]), float(sys.argv[2]))
