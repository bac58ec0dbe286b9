"""Micro-batching in a real `treadle serve` process (batching on, the default): many
concurrent requests are joined into one predict call, and each caller still gets the
predictions for its own rows, under its own request id.

Bursts are repeated on kept-alive connections: the first burst mostly opens
connections, later ones arrive together and are the ones that get joined.
(Whether they were joined shows in /metrics: the rows per predict call.)
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serving_support import (
    FEATURES,
    MODEL,
    Server,
    client,
    expected,
    metric_samples,
    module_home,
    random_rows,
    running,
)

pytestmark = pytest.mark.slow

CONCURRENT = 64
ROUNDS = 4


@dataclasses.dataclass(frozen=True)
class Served:
    home: Path
    server: Server


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = module_home(tmp_path_factory, "batching")
    with running(home, "serve", f"{MODEL}@champion") as server:
        yield Served(home, server)


@dataclasses.dataclass(frozen=True)
class Sent:
    request_id: str
    rows: list[list[float]]
    good: bool


@dataclasses.dataclass(frozen=True)
class Got:
    sent: Sent
    status: int
    body: dict[str, Any]
    header_id: str | None


def burst_plan(round_: int, bad_every: int = 0) -> list[Sent]:
    """64 requests of 1 to 3 distinct rows each; every `bad_every`-th lacks a column."""
    plan = []
    for i in range(CONCURRENT):
        rows = random_rows(1 + i % 3, seed=1000 * round_ + i)
        good = not (bad_every and i % bad_every == 0)
        plan.append(Sent(f"r{round_}-{i:02d}", rows, good))
    return plan


def run_bursts(served: Served, plans: list[list[Sent]]) -> list[Got]:
    """One thread per caller, each on its own kept-alive connection; a barrier lets all
    64 send each round at the same moment. (Threads on the standard library client: an
    asyncio client with 64 connections is slower than the server and spreads the burst.)"""
    got: list[Got] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(CONCURRENT)

    def caller(i: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", served.server.port, timeout=30)
        try:
            for plan in plans:
                sent = plan[i]
                columns = FEATURES if sent.good else FEATURES[:-1]
                data = sent.rows if sent.good else [row[:-1] for row in sent.rows]
                body = json.dumps({"columns": columns, "data": data})
                barrier.wait(timeout=30)
                connection.request(
                    "POST",
                    "/predict",
                    body=body,
                    headers={"content-type": "application/json", "x-request-id": sent.request_id},
                )
                response = connection.getresponse()
                answer = json.loads(response.read())
                got.append(Got(sent, response.status, answer, response.getheader("x-request-id")))
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)
            barrier.abort()
        finally:
            connection.close()

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(CONCURRENT)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    return got


def expected_by_request(home: Path, got: list[Got]) -> dict[str, list[Any]]:
    """The reference predictions for every request, from one predict call."""
    rows = [row for g in got for row in g.sent.rows]
    flat = expected(home, 1, rows)
    out, start = {}, 0
    for g in got:
        out[g.sent.request_id] = flat[start : start + len(g.sent.rows)]
        start += len(g.sent.rows)
    return out


def test_concurrent_requests_each_get_their_own_predictions(served: Served) -> None:
    got = run_bursts(served, [burst_plan(r) for r in range(ROUNDS)])
    assert len(got) == CONCURRENT * ROUNDS
    reference = expected_by_request(served.home, got)
    for g in got:
        assert g.status == 200, g
        assert g.header_id == g.sent.request_id
        assert g.body["request_id"] == g.sent.request_id
        assert g.body["version"] == 1
        assert g.body["predictions"] == reference[g.sent.request_id], g.sent.request_id


def test_a_refused_request_does_not_spoil_its_batch(served: Served) -> None:
    got = run_bursts(served, [burst_plan(r, bad_every=8) for r in range(10, 10 + ROUNDS)])
    refused = [g for g in got if not g.sent.good]
    assert refused and all(g.status == 400 and g.body["field"] == "f19" for g in refused)
    answered = [g for g in got if g.sent.good]
    reference = expected_by_request(served.home, answered)
    for g in answered:
        assert g.status == 200, g
        assert g.body["predictions"] == reference[g.sent.request_id], g.sent.request_id


def test_metrics_show_batches_of_more_than_one_row(served: Served) -> None:
    run_bursts(served, [burst_plan(r) for r in range(20, 20 + ROUNDS)])
    with client(served.server.url) as http:
        text = http.get("/metrics").text
    assert "# TYPE treadle_batch_rows histogram" in text
    counts = [v for labels, v in metric_samples(text, "treadle_batch_rows_count") if labels]
    singles = [
        v
        for labels, v in metric_samples(text, "treadle_batch_rows_bucket")
        if labels.get("le") == "1.0" and labels.get("version") == "1"
    ]
    assert counts and sum(counts) > 0, "no batch was recorded"
    assert sum(singles) < sum(counts), "every batch recorded had a single row"
