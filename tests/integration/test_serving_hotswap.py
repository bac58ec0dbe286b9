"""Hot swap in a real `treadle serve NAME@champion` process: while clients keep sending,
`treadle models alias` moves the alias and the server rolls the new version in without
one failed or dropped request; a version that cannot be loaded is never swapped in.

Run once with micro-batching (the default) and once without: a swap replaces the
batchers too, and requests waiting in the old one must still be answered.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving_support import (
    FEATURES,
    MODEL,
    Server,
    client,
    corrupt_version,
    expected,
    metric_samples,
    module_home,
    ok,
    running,
    telling_rows,
    wait_for,
)

pytestmark = pytest.mark.slow

CLIENTS = 8


@dataclasses.dataclass(frozen=True)
class Served:
    home: Path
    server: Server
    rows: list[list[float]]
    answers: dict[int, list[int]]  # version -> its prediction for each row


@pytest.fixture(scope="module", params=["batch", "no-batch"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    home = module_home(tmp_path_factory, f"hotswap-{request.param}")
    with running(home, "serve", f"{MODEL}@champion", f"--{request.param}") as server:
        rows = telling_rows(home, 16, seed=5)
        answers = {v: expected(home, v, rows) for v in (1, 2)}
        yield Served(home, server, rows, answers)


@dataclasses.dataclass(frozen=True)
class Answer:
    caller: int
    row: int
    status: int
    version: int  # 0 when the answer named none
    prediction: object
    at: float


class Traffic:
    """CLIENTS threads sending one-row requests back to back until stopped."""

    def __init__(self, served: Served) -> None:
        self.served = served
        self.answers: list[Answer] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._caller, args=(i,), daemon=True) for i in range(CLIENTS)
        ]

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def count(self, version: int | None = None) -> int:
        """Answers so far, or those from one version."""
        return sum(1 for a in list(self.answers) if version is None or a.version == version)

    def _caller(self, caller: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.served.server.port, timeout=30)
        n = 0
        while not self._stop.is_set():
            row = (caller + n) % len(self.served.rows)
            n += 1
            body = json.dumps({"columns": FEATURES, "data": [self.served.rows[row]]})
            try:
                connection.request(
                    "POST", "/predict", body=body, headers={"content-type": "application/json"}
                )
                response = connection.getresponse()
                payload = json.loads(response.read())
            except Exception as exc:  # a dropped connection is a failure to report
                self.errors.append(f"caller {caller}: {type(exc).__name__}: {exc}")
                connection.close()
                connection = http.client.HTTPConnection(
                    "127.0.0.1", self.served.server.port, timeout=30
                )
                continue
            self.answers.append(
                Answer(
                    caller,
                    row,
                    response.status,
                    int(payload.get("version") or 0),
                    (payload.get("predictions") or [None])[0],
                    time.monotonic(),
                )
            )
        connection.close()


def current_version(served: Served) -> int:
    with client(served.server.url) as http:
        response = http.post("/predict", json={"columns": FEATURES, "data": served.rows[:1]})
    assert response.status_code == 200, response.text
    return int(response.json()["version"])


def test_alias_move_swaps_without_dropping_a_request(served: Served) -> None:
    assert current_version(served) == 1
    with Traffic(served) as traffic:
        assert wait_for(lambda: traffic.count() >= 300, 20), traffic.errors[:3]
        ok(served.home, "models", "alias", MODEL, "champion", "2")
        assert wait_for(lambda: traffic.count(2) > 0, 20), "the new version never answered"
        after = traffic.count()
        assert wait_for(lambda: traffic.count() >= after + 300, 20)

    assert traffic.errors == []
    bad = [a for a in traffic.answers if a.status != 200]
    assert bad == [], bad[:5]
    assert {a.version for a in traffic.answers} == {1, 2}
    # the version named is the one that answered: its prediction, not the other's
    wrong = [a for a in traffic.answers if a.prediction != served.answers[a.version][a.row]]
    assert wrong == [], wrong[:5]
    # each caller, once answered by v2, is never answered by v1 again
    for caller in range(CLIENTS):
        versions = [a.version for a in traffic.answers if a.caller == caller]
        first_new = versions.index(2)
        assert set(versions[first_new:]) == {2}, f"caller {caller} went back to v1"
    assert f"serving {MODEL}@champion: v2 primary" in served.server.output()
    with client(served.server.url) as http:
        meta = http.get(f"/v2/models/{MODEL}").json()
        swaps = metric_samples(http.get("/metrics").text, "treadle_revision_swaps_total")
    assert meta["versions"] == ["2"]
    assert swaps == [({}, 2.0)]


def test_a_version_that_fails_to_load_is_never_swapped_in(served: Served) -> None:
    serving = current_version(served)
    corrupt_version(served.home, 3)
    with Traffic(served) as traffic:
        assert wait_for(lambda: traffic.count() >= 100, 20)
        ok(served.home, "models", "alias", MODEL, "champion", "3")
        assert wait_for(lambda: "could not roll in" in served.server.output(), 20), (
            served.server.output()
        )
        after = traffic.count()
        assert wait_for(lambda: traffic.count() >= after + 200, 20)

    assert traffic.errors == []
    assert {(a.status, a.version) for a in traffic.answers} == {(200, serving)}
    log = served.server.output()
    assert "corrupt" in log[log.index("could not roll in") :]
    assert "still serving the previous one" in log
    with client(served.server.url) as http:
        assert http.get("/v2/health/ready").status_code == 200
        assert http.get(f"/v2/models/{MODEL}").json()["versions"] == [str(serving)]
