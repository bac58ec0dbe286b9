"""The prediction log's writer on its own: rows, types and grouping of what it is given."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("pyarrow")

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
    # room for the signature's header and three requests
    log = PredictionLog(tmp_path, max_queue=4, flush_seconds=60, convert=False)
    log._stop.set()  # the thread that writes the buffer out is held back
    log._wake.set()
    log._thread.join()
    for i in range(5):
        log.append(f"r{i}", "m", 1, 1.0, ["a", "b"], [[1.0, 1]], [1], NUMERIC)
    assert (log.depth, log.dropped) == (4, 2)
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
