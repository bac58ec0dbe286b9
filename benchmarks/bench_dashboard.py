"""Dashboard benchmark: server time of every page with 100,000 runs in the store.

A real quickstart run (its graph, params, metrics, artifacts and a registered model), a
deployment with a monitor, and 99,999 more runs written through the store's own
`create_run`, `log_params` and `log_metrics` in one transaction (10 experiments, mixed
states and causes, two params and two metrics each). Each page is then asked for through
the dashboard's ASGI app in this process (login, cookie and all), warm-up first, then
in shuffled order; every answer must be 200 and show what the page is about. Prints one
JSON line per page: p50 and p95 of the server time, target p95 < 500 ms.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_api import _OneTransaction
from fastapi.testclient import TestClient

from treadle.config import load_settings
from treadle.engine import RunOptions, find_pipeline, run_pipeline
from treadle.monitoring.monitor import new_monitor
from treadle.registry import set_alias
from treadle.registry.refs import ModelRef
from treadle.server.app import create_app
from treadle.server.up import bootstrap
from treadle.serving.deployments import deploy, make_spec
from treadle.store import Store, open_store
from treadle.store.records import MetricRecord, RunRecord, new_id
from treadle.store.sql.runs import SqlRunStore
from treadle.store.sql.tracking import SqlTrackingStore
from treadle.types import RunState

HERE = Path(__file__).resolve().parent
QUICKSTART = HERE.parent / "examples" / "quickstart" / "pipeline.py"
STORE_RUNS = 100_000
EXPERIMENTS = 10
REQUESTS = 20
WARM_UP = 2
TARGET_MS = 500.0
CAUSES = ("manual",) * 7 + ("schedule",) * 2 + ("monitor.alert",)


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def seed(store: Store) -> dict[str, str]:
    training, source = find_pipeline(str(QUICKSTART))
    real = run_pipeline(training, {"rows": 200}, store, RunOptions(experiment="sweep-0"), source)
    other = run_pipeline(
        training, {"rows": 200, "c": 0.3}, store, RunOptions(experiment="sweep-0"), source
    )
    project = store.projects.get_project("default")
    set_alias("breast-cancer@1", "champion", store=store)
    deploy(store, project.id, "api", make_spec(ModelRef("breast-cancer", alias="champion")))
    store.monitoring.create_monitor(
        new_monitor(project_id=project.id, name="watch", deployment="api", user="admin")
    )
    version_id = store.runs.get_run(real.id).pipeline_version_id
    experiments = [
        store.projects.ensure_experiment(project.id, f"sweep-{e}", "admin").id
        for e in range(EXPERIMENTS)
    ]
    rng = random.Random(0)
    oldest = time.time() - 60.0 * STORE_RUNS
    metrics = []
    with store.db.write() as conn:
        one = _OneTransaction(conn, store.db.url)
        runs, tracking = SqlRunStore(one), SqlTrackingStore(one)
        for i in range(STORE_RUNS - 2):
            created = oldest + 60.0 * i
            roll = rng.random()
            state = RunState.SUCCEEDED if roll < 0.9 else RunState.FAILED
            run_id = new_id()
            runs.create_run(
                RunRecord(
                    id=run_id,
                    project_id=project.id,
                    experiment_id=experiments[i % EXPERIMENTS],
                    pipeline_version_id=version_id if i % 2 == 0 else None,
                    name=f"training-{i}",
                    state=state,
                    created_by="admin",
                    executor="local",
                    attempt=1,
                    created_at=created,
                    started_at=created,
                    ended_at=created + rng.uniform(1, 600),
                    cause={"kind": rng.choice(CAUSES), "by": "admin"},
                )
            )
            tracking.log_params(
                run_id, {"lr": f"{rng.uniform(1e-4, 1e-1):.5f}", "depth": str(rng.randrange(2, 12))}
            )
            loss = rng.uniform(0.05, 1.0)
            metrics += [
                MetricRecord(run_id, "loss", loss, 0, created),
                MetricRecord(run_id, "accuracy", 1 - loss / 2, 0, created),
            ]
        tracking.log_metrics(metrics)
    return {"run": real.id, "other": other.id, "name": real.record.name}


def main() -> int:
    for key in [k for k in os.environ if k.startswith("TREADLE_")]:
        del os.environ[key]
    with tempfile.TemporaryDirectory(prefix="treadle-bench-dashboard-") as home:
        os.environ["TREADLE_HOME"] = home
        store = open_store(load_settings().replace(user="admin"))
        token = bootstrap(store)
        assert token is not None
        began = time.perf_counter()
        seeded = seed(store)
        seeded_s = time.perf_counter() - began
        with store.db.read() as conn:
            count = int(conn.execute("SELECT COUNT(*) AS n FROM runs")[0]["n"])
        assert count == STORE_RUNS, count
        client = TestClient(create_app(store), base_url="http://127.0.0.1")
        form = client.get("/ui/login").text
        nonce = re.search(r'name="nonce" value="([^"]+)"', form)
        assert nonce is not None
        logged = client.post(
            "/ui/login", data={"token": token, "nonce": nonce.group(1), "next": "/ui/"}
        )
        assert logged.status_code == 200 and "Latest runs" in logged.text, logged.text[:300]
        p = "/ui/p/default"
        run, other = seeded["run"], seeded["other"]
        pages = {
            "home": (f"{p}/", "Latest runs"),
            "runs": (f"{p}/runs", "training-"),
            "runs, page 1,000": (f"{p}/runs?offset=49950", "training-"),
            "runs, experiment and state": (f"{p}/runs?experiment=sweep-3&state=FAILED", "failed"),
            "runs, by cause (scan)": (f"{p}/runs?cause=monitor.alert", "monitor.alert"),
            "runs, pipeline": (f"{p}/runs?pipeline=training", "training-"),
            "run": (f"{p}/runs/{run}", seeded["name"]),
            "compare": (f"{p}/compare?run={run}&run={other}", "Compare 2 runs"),
            "experiments": (f"{p}/experiments", "sweep-9"),
            "experiment": (f"{p}/experiments/sweep-1", "parallel"),
            "models": (f"{p}/models", "breast-cancer"),
            "model": (f"{p}/models/breast-cancer", "Alias history"),
            "model version": (f"{p}/models/breast-cancer/versions/1", "Lineage"),
            "deployments": (f"{p}/deployments", "api"),
            "deployment": (f"{p}/deployments/api", "Rollout history"),
            "monitoring": (f"{p}/monitoring", "watch"),
            "monitor": (f"{p}/monitoring/watch", "Windows"),
            "pipelines": (f"{p}/pipelines", "Schedules"),
        }
        times: dict[str, list[float]] = {name: [] for name in pages}

        def ask(name: str) -> float:
            path, marker = pages[name]
            start = time.perf_counter()
            response = client.get(path)
            took = (time.perf_counter() - start) * 1000
            assert response.status_code == 200, f"{name}: {response.status_code}"
            assert marker in response.text, f"{name}: {marker!r} is not on the page"
            return took

        for name in pages:
            for _ in range(WARM_UP):
                ask(name)
        work = [name for name in pages for _ in range(REQUESTS)]
        random.Random(1).shuffle(work)
        for name in work:
            times[name].append(ask(name))
        for name, taken in times.items():
            p95 = quantile(taken, 0.95)
            emit(
                benchmark=f"dashboard page: {name}",
                runs_in_store=count,
                p50_ms=round(statistics.median(taken), 2),
                p95_ms=round(p95, 2),
                max_ms=round(max(taken), 2),
                target_ms=TARGET_MS,
                meets_target=p95 < TARGET_MS,
                requests=len(taken),
                seeded_s=round(seeded_s, 1),
            )
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
