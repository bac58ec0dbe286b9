"""The prediction log's writer on its own: rows, types and grouping of what it is given."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pyarrow")

from treadle.serving.predlog import PredictionLog, read_predictions

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
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]

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


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, max_queue=3, flush_seconds=60)
    log._stop.set()  # the writer is held back, so the queue can only fill
    log._wake.set()
    log._thread.join()
    for i in range(5):
        log.append(f"r{i}", "m", 1, 1.0, ["a", "b"], [[1.0, 1]], [1], NUMERIC)
    assert (log.depth, log.dropped) == (3, 2)
    log.flush()
    assert log.written == 3
