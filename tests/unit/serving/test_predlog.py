"""The prediction log's writer on its own: rows, types and grouping of what it is given."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

pytest.importorskip("pyarrow")

from treadle.serving import predlog
from treadle.serving.predlog import PredictionLog, convert_spool, read_predictions

NUMERIC = {"a": "float64", "b": "int64", "prediction": "int64"}
MIXED = {"city": "string", "size": "float64", "prediction": "float64"}


def test_requests_of_several_rows_and_two_signatures_read_back_row_for_row(
    tmp_path: Path,
) -> None:
    log = PredictionLog(tmp_path, flush_seconds=60)
    # a canary with another signature interleaved with the primary, one and three rows
    log.append("r1", "m", 1, 1.5, ["a", "b"], [[0.5, 2]], [1], NUMERIC)
    log.append(
        "r2", "m", 2, 2.5, ["city", "size"], [["Oslo", 3.0], ["Lima", 4.5]], [0.1, 0.2], MIXED
    )
    log.append("r3", "m", 1, 3.5, ["a", "b"], [[1.0, 3], [2.0, 4], [3.0, 5]], [0, 1, 0], NUMERIC)
    log.append("r4", "m", 1, 4.5, ["a", "b"], [[4.0, 6]], [1], NUMERIC)
    log.close()
    assert (log.written, log.dropped) == (7, 0)
    # the spool is empty and no temporary file is left anywhere
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.name.startswith(".")]
    assert not list((tmp_path / ".spool").iterdir())

    table = read_predictions(tmp_path)
    rows = sorted(table.to_pylist(), key=lambda r: (r["request_id"], r["ts"]))
    numeric = [r for r in rows if r["version"] == 1]
    assert [(r["request_id"], r["input.a"], r["input.b"], r["prediction"]) for r in numeric] == [
        ("r1", 0.5, 2, 1),
        ("r3", 1.0, 3, 0),
        ("r3", 2.0, 4, 1),
        ("r3", 3.0, 5, 0),
        ("r4", 4.0, 6, 1),
    ]
    assert [r["latency_ms"] for r in numeric] == [1.5, 3.5, 3.5, 3.5, 4.5]
    mixed = [r for r in rows if r["version"] == 2]
    assert [(r["input.city"], r["input.size"], r["prediction"]) for r in mixed] == [
        ("Oslo", 3.0, 0.1),
        ("Lima", 4.5, 0.2),
    ]
    assert str(table.schema.field("input.b").type) == "int64"


def test_a_full_buffer_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    # room for three requests
    log = PredictionLog(tmp_path, max_queue=3, flush_seconds=60, convert=False)
    log._stop.set()  # the thread that writes the buffer out is held back
    log._wake.set()
    log._thread.join()
    for i in range(5):
        log.append(f"r{i}", "m", 1, 1.0, ["a", "b"], [[1.0, 1]], [1], NUMERIC)
    assert (log.depth, log.dropped) == (3, 2)
    log.flush()
    assert (log.depth, log.spooled) == (0, 3)
    assert convert_spool(tmp_path) == 3
    assert read_predictions(tmp_path).num_rows == 3


def test_a_spool_file_converted_twice_gives_the_same_segment(tmp_path: Path) -> None:
    """A converter killed after writing a segment but before removing its spool file:
    the next one writes that segment again under the same name, so no row is doubled."""
    log = PredictionLog(tmp_path, flush_seconds=60, convert=False)
    log.append("r1", "m", 1, 1.0, ["a", "b"], [[1.0, 1], [2.0, 2]], [1, 0], NUMERIC)
    log.flush()
    (spool,) = (tmp_path / ".spool").glob("*.jsonl")
    kept = spool.read_bytes()
    assert convert_spool(tmp_path) == 2
    spool.write_bytes(kept)  # as a converter killed before it removed the file leaves it
    assert convert_spool(tmp_path) == 2
    log.close()
    assert len(list(tmp_path.rglob("*.parquet"))) == 1
    assert read_predictions(tmp_path).column("request_id").to_pylist() == ["r1", "r1"]
    assert not list((tmp_path / ".spool").iterdir())


def test_a_dead_converter_is_replaced_and_nothing_is_lost(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_seconds=0.05)
    log.append("r1", "m", 1, 1.0, ["a", "b"], [[1.0, 1]], [1], NUMERIC)
    first = log._converter
    assert first is not None
    first.kill()
    first.wait()
    deadline = time.monotonic() + 20
    while log._converter is first and time.monotonic() < deadline:
        time.sleep(0.02)
    assert log._converter is not first
    log.append("r2", "m", 1, 1.0, ["a", "b"], [[2.0, 2]], [0], NUMERIC)
    while log.written < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    log.close()
    assert sorted(read_predictions(tmp_path).column("request_id").to_pylist()) == ["r1", "r2"]


def _spooled_runs(tmp_path: Path, requests: list[tuple[Any, ...]], dtypes: dict[str, str]) -> Any:
    """The runs of the spool file a log writes for `requests` (request id, columns, rows,
    outputs); the log is closed, so the segments are written too."""
    log = PredictionLog(tmp_path, flush_seconds=60, convert=False)
    for request_id, columns, rows, outputs in requests:
        log.append(request_id, "m", 3, 2.0, columns, rows, outputs, dtypes)
    log.flush()
    (spool,) = (tmp_path / ".spool").glob("*.jsonl")
    runs = list(predlog._runs(spool.read_bytes()))
    log.close()
    return runs


def test_the_columnar_reader_and_the_line_reader_make_the_same_segment(tmp_path: Path) -> None:
    """Numeric signatures take pyarrow's JSON reader; it must give exactly the table the
    line-by-line reader gives: rows spread per request, integers typed, types as declared,
    NaN kept, and a request whose values JSON cannot carry left out."""
    requests = [
        ("r1", ["a", "b"], [[0.5, 2]], [1]),
        ("r2", ["a", "b"], [[1, 3], [2.25, 4], [3.0, 5]], [0, 1, 0]),  # an int for a float
        ("r3", ["a", "b"], [[float("nan"), 7]], [1]),
        ("r4", ["a", "b"], [[4.0, 6]], [1]),
        ("r5", ["a", "b"], [[object(), 8]], [1]),  # JSON cannot carry it: left out
    ]
    ((header, body),) = _spooled_runs(tmp_path, requests, NUMERIC)
    columnar = predlog._arrow_table(header, body)
    assert columnar is not None
    by_line = predlog._python_table(header, body)
    assert columnar.schema == by_line.schema
    assert columnar.to_pandas().equals(by_line.to_pandas())  # (NaN where NaN)
    assert columnar.column("request_id").to_pylist() == ["r1", "r2", "r2", "r2", "r3", "r4"]
    assert columnar.column("input.a").to_pylist()[:4] == [0.5, 1.0, 2.25, 3.0]
    assert columnar.column("input.b").to_pylist() == [2, 3, 4, 5, 7, 6]
    assert str(columnar.schema.field("input.b").type) == "int64"
    assert str(columnar.schema.field("prediction").type) == "int64"
    assert set(columnar.column("model").to_pylist()) == {"m"}


@pytest.mark.parametrize(
    ("columns", "rows", "outputs", "dtypes"),
    [
        (["city", "size"], [["Oslo", 3.0]], [0.5], MIXED),  # text inputs
        (["a", "b"], [[0.5, 2.5]], [1], NUMERIC),  # a fraction in an integer column
        (["a", "b"], [[0.5, 2]], ["yes"], {"a": "float64", "b": "int64"}),  # no output type
    ],
    ids=["text-inputs", "fraction-in-int", "undeclared-output"],
)
def test_what_the_columnar_reader_cannot_type_goes_line_by_line(
    tmp_path: Path,
    columns: list[str],
    rows: list[list[Any]],
    outputs: list[Any],
    dtypes: dict[str, str],
) -> None:
    ((header, body),) = _spooled_runs(tmp_path, [("r1", columns, rows, outputs)], dtypes)
    assert predlog._arrow_table(header, body) is None
    (row,) = read_predictions(tmp_path).to_pylist()
    assert [row[f"input.{c}"] for c in columns] == rows[0]
    assert row["prediction"] == outputs[0]


def test_a_value_json_cannot_carry_leaves_that_request_out(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_seconds=60)
    log.append("r1", "m", 1, 1.0, ["a", "b"], [[1.0, 1]], [1], NUMERIC)
    log.append("r2", "m", 1, 1.0, ["a", "b"], [[object(), 1]], [1], NUMERIC)
    log.append("r3", "m", 1, 1.0, ["a", "b"], [[3.0, 3]], [0], NUMERIC)
    log.close()
    assert read_predictions(tmp_path).column("request_id").to_pylist() == ["r1", "r3"]


def test_a_spool_file_of_the_earlier_line_format_still_converts(tmp_path: Path) -> None:
    """Requests were once JSON arrays; a spool left by such a server is still read."""
    spool = tmp_path / ".spool"
    spool.mkdir()
    header = orjson.dumps({"model": "m", "columns": ["a", "b"], "dtypes": NUMERIC})
    lines = [orjson.dumps([time.time(), "old", 1, 1.0, [[1.0, 2], [3.0, 4]], [0, 1]])]
    (spool / "000000-000000-1-000001.jsonl").write_bytes(b"\n".join([header, *lines]) + b"\n")
    assert convert_spool(tmp_path) == 2
    table = read_predictions(tmp_path)
    assert table.column("input.b").to_pylist() == [2, 4]
    assert table.column("prediction").to_pylist() == [0, 1]


def test_a_whole_number_beyond_int64_keeps_its_column_float(tmp_path: Path) -> None:
    """The server accepts 1e300 for an integer column (it is a whole number); the log
    keeps it, as a float column, rather than failing to convert the file."""
    ((header, body),) = _spooled_runs(tmp_path, [("r1", ["a", "b"], [[0.5, 1e300]], [1])], NUMERIC)
    assert predlog._arrow_table(header, body) is None
    (row,) = read_predictions(tmp_path).to_pylist()
    assert (row["input.a"], row["input.b"]) == (0.5, 1e300)


def test_a_spool_file_that_cannot_be_converted_is_set_aside_and_the_rest_go_on(
    tmp_path: Path,
) -> None:
    spool = tmp_path / ".spool"
    spool.mkdir()
    header = orjson.dumps({"model": "m", "columns": ["a", "b"], "dtypes": NUMERIC})
    (spool / "000000-000000-1-000001.jsonl").write_bytes(header + b'\n{"t": 1.0, "r"\n')
    log = PredictionLog(tmp_path, flush_seconds=60, convert=False)
    log.append("r1", "m", 1, 1.0, ["a", "b"], [[1.0, 1]], [1], NUMERIC)
    log.close()  # converts the spool: the broken file first, then the log's own
    assert read_predictions(tmp_path).column("request_id").to_pylist() == ["r1"]
    assert [p.name for p in spool.iterdir()] == [".000000-000000-1-000001.failed"]
