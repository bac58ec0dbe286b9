"""Two `treadle up` control planes on one PostgreSQL database, as behind a load balancer.

Both processes have homes of their own but share the database (TREADLE_DB_URL) and the
artifact folder, so each runs a scheduler over the same schedules and executes runs that
register versions of the same model. A due time must start one run between them, and
versions registered through both at once must be numbered 1, 2, 3… with none lost and
none given twice: the database decides (a unique key on each fire's due time, a row lock
on the model while its next version number is taken).
"""

from __future__ import annotations

import contextlib
import itertools
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from api_support import Server, start_server

import treadle
from treadle.store.records import RunRecord
from treadle.types import RunState

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

PROJECT = "default"
PIPELINE = "plane_flow"
MODEL = "raced"
RUNS_PER_PLANE = 8
FINISHED_SECONDS = 120.0

PLANE_FLOW = """
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from treadle import pipeline, register_model, step


@step(cache=False)
def fit(seed: int, register: bool) -> int:
    if not register:
        return 0
    X, y = make_classification(n_samples=60, n_features=4, random_state=seed)
    model = LogisticRegression(max_iter=200).fit(X, y)
    return register_model(model, "raced", metrics={"seed": float(seed)}).version


@pipeline
def plane_flow(seed: int = 0, register: bool = False) -> None:
    fit(seed, register)
"""


def package(text: str) -> bytes:
    """A real package of the pipeline, built as `treadle pipeline build` does."""
    from treadle.engine import find_pipeline
    from treadle.packaging import build_package

    folder = Path(tempfile.mkdtemp(prefix="planes-package-"))
    (folder / f"{PIPELINE}.py").write_text(text)
    found, source = find_pipeline(str(folder / f"{PIPELINE}.py"))
    assert source is not None
    return build_package(found, source).data


class Planes:
    def __init__(self, servers: list[Server], token: str) -> None:
        self.servers = servers
        self.token = token

    def client(self, index: int) -> treadle.Client:
        return treadle.Client(self.servers[index].url, self.token, project=PROJECT, trust_env=False)


@pytest.fixture(scope="module")
def planes(pg_databases: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Planes]:
    """Two servers started at the same moment on one fresh database and one artifact
    folder: one migrates the empty database while the other waits, and one of them makes
    the admin user."""
    root = tmp_path_factory.mktemp("planes")
    db_url = pg_databases.empty("treadle_planes")
    shared = root / "artifacts"
    homes = [root / name for name in ("a", "b")]
    for home in homes:
        home.mkdir()
        (home / "config.toml").write_text(f'artifact_url = "{shared}"\n')
    servers: list[Server] = []
    try:
        with ThreadPoolExecutor(2) as pool:
            starting = [pool.submit(start_server, home, db_url, root / "logs") for home in homes]
            for future in starting:
                with contextlib.suppress(Exception):
                    servers.append(future.result())
            for future in starting:
                future.result()  # a server that did not start fails the module, with its log
        tokens = [t for s in servers for t in s.printed_tokens()]
        assert len(tokens) == 1, [s.stderr() for s in servers]
        made = Planes(servers, tokens[0])
        with made.client(0) as client:
            client.deploy_package(package(PLANE_FLOW))
        yield made
    finally:
        for server in servers:
            server.stop()
        pg_databases.drop(db_url)


def eventually(probe: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.2)


def all_finished(client: treadle.Client, run_ids: list[str]) -> list[RunRecord]:
    def probe() -> list[RunRecord] | None:
        runs = [client.get_run(r) for r in run_ids]
        return runs if all(r.state.finished for r in runs) else None

    found: list[RunRecord] = eventually(probe, FINISHED_SECONDS, f"{len(run_ids)} runs finished")
    return found


def test_both_planes_started_together_share_one_schema_and_one_admin(planes: Planes) -> None:
    for index in (0, 1):
        with planes.client(index) as client:
            assert [p.name for p in client.list_pipelines()] == [PIPELINE]
    assert "migrating the database" not in planes.servers[1].stderr()
    assert "migrating the database" not in planes.servers[0].stderr()


def test_each_due_time_of_a_schedule_fires_once_across_both_planes(planes: Planes) -> None:
    with planes.client(0) as first, planes.client(1) as second:
        # catch-up "all": a due time a busy machine noticed late still fires, so every
        # second from the first fire to the last must be there exactly once
        made = second.create_schedule("every-second", PIPELINE, "* * * * * *", catchup="all")
        try:
            eventually(
                lambda: len(first.schedule_fires("every-second", limit=1000)) >= 5,
                30,
                "five fires of a schedule due every second",
            )
        finally:
            first.pause_schedule("every-second")
        time.sleep(1.0)  # a fire claimed just before the pause finishes starting its run
        fires = sorted(second.schedule_fires("every-second", limit=1000), key=lambda f: f.due_at)
        runs = [
            r for r in first.list_runs(limit=1000) if (r.cause or {}).get("schedule_id") == made.id
        ]
        finished = all_finished(first, [r.id for r in runs])

    dues = [f.due_at for f in fires]
    assert len(set(dues)) == len(dues), f"a due time fired twice: {dues}"
    assert dues == [dues[0] + i for i in range(len(dues))], dues
    assert all(f.outcome == "started" and f.run_id for f in fires), fires
    assert sorted(r.id for r in runs) == sorted(str(f.run_id) for f in fires)
    assert sorted(float((r.cause or {})["due_at"]) for r in runs) == dues
    assert {r.state for r in finished} == {RunState.SUCCEEDED}, [r.error for r in finished]


def test_versions_registered_through_both_planes_at_once_are_numbered_without_gaps(
    planes: Planes,
) -> None:
    total = 2 * RUNS_PER_PLANE
    order = list(itertools.islice(itertools.cycle([0, 1]), total))

    def submit(index: int) -> str:
        with planes.client(order[index]) as client:
            run = client.submit_run(PIPELINE, {"seed": index, "register": True}, use_cache=False)
        return run.id

    with ThreadPoolExecutor(total) as pool:
        run_ids = list(pool.map(submit, range(total)))

    with planes.client(1) as client:
        finished = all_finished(client, run_ids)
        assert {r.state for r in finished} == {RunState.SUCCEEDED}, [r.error for r in finished]
        versions = client.list_versions(MODEL)

    numbers = [v.version for v in versions]
    assert numbers == list(range(1, total + 1)), numbers
    assert sorted(str(v.run_id) for v in versions) == sorted(run_ids), "a run's version is lost"
    assert sorted(v.metrics["seed"] for v in versions) == [float(i) for i in range(total)]
