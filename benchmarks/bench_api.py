"""Platform-server benchmarks: `treadle up` ready time, API latency with 100,000 runs in
the store, and 20 clients logging metrics through the API at once.

Prints one JSON object per line. Every answer is checked (the run asked for; exactly the
page of runs expected at that offset), and the metric rows the clients sent are counted
again through the API and in the database, so a server that dropped or garbled work
fails instead of looking fast. `--quick` shortens the metrics run from 60 s to 10 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import random
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from treadle import RunOptions, run_pipeline
from treadle.config import Settings, load_settings
from treadle.engine import find_pipeline
from treadle.store import Store, open_store
from treadle.store.db import Connection
from treadle.store.records import RunRecord, new_id
from treadle.store.sql.runs import SqlRunStore
from treadle.tracking.heartbeat import Heartbeat
from treadle.types import RunState

HERE = Path(__file__).resolve().parent
PIPELINES_FILE = HERE / "pipelines.py"

UP_STARTS = 7
READY_TARGET_S = 2.0
START_TIMEOUT_S = 60.0
HEALTH_POLL_S = 0.005

STORE_RUNS = 100_000
EXPERIMENTS = 5
PAGE = 50
REQUESTS = 300
WARM_UP_REQUESTS = 50
LATENCY_TARGET_MS = 20.0

CLIENTS = 20
BATCH = 100
METRIC_KEYS = ("loss", "accuracy", "learning_rate", "grad_norm")
INGEST_S = 60.0
QUICK_INGEST_S = 10.0
REQUEST_TIMEOUT_S = 60.0

PROJECT = "default"
API = f"/api/v1/projects/{PROJECT}"


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def quantile(values: list[float], q: float) -> float:
    """Nearest rank, as in the other benchmarks: a value that was really measured."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def treadle_command() -> list[str]:
    # The console script next to this interpreter is what users run.
    script = Path(sys.executable).parent / "treadle"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "treadle"]


def isolated_env(home: Path, pycache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TREADLE_")}
    env["TREADLE_HOME"] = str(home)
    # As in bench_pipelines: measure an installed treadle (bytecode compiled) without
    # writing __pycache__ into the source tree.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def settings_of(home: Path) -> Settings:
    return load_settings({"TREADLE_HOME": str(home)})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_client(base_url: str, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # trust_env=False: a proxy set in the environment must not carry 127.0.0.1 traffic.
    return httpx.Client(
        base_url=base_url, headers=headers, trust_env=False, timeout=REQUEST_TIMEOUT_S
    )


# -- the server process -------------------------------------------------------------------


class Up:
    """One `treadle up` in a process group of its own, its output in a file."""

    def __init__(self, home: Path, pycache: Path, log: Path) -> None:
        self.home, self.pycache, self.log = home, pycache, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start it; seconds from starting the process to the first 200 from /healthz."""
        cmd = [*treadle_command(), "up", "--host", "127.0.0.1", "--port", str(self.port)]
        env = isolated_env(self.home, self.pycache)
        with http_client(self.url) as probe, self.log.open("wb") as out:
            # The probe client exists before the clock starts, so its set-up is not timed.
            began = time.perf_counter()
            self.proc = subprocess.Popen(
                cmd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            while time.perf_counter() - began < START_TIMEOUT_S:
                if self.proc.poll() is not None:
                    raise SystemExit(
                        f"treadle up exited {self.proc.returncode} before it was ready:\n"
                        f"{self.output()}"
                    )
                with contextlib.suppress(httpx.TransportError):
                    if probe.get("/healthz", timeout=1.0).status_code == 200:
                        return time.perf_counter() - began
                time.sleep(HEALTH_POLL_S)
        self.stop()
        raise SystemExit(
            f"treadle up was not ready after {START_TIMEOUT_S:.0f} s:\n{self.output()}"
        )

    def stop(self) -> None:
        """Ctrl-C, as a user stops it; harder signals only if it does not go."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        for sig, wait_s in ((signal.SIGINT, 20.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(wait_s)
        self.proc = None

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def reported_ready_s(self) -> float | None:
        """What the server itself printed as its ready time (after its imports began)."""
        found = re.search(r"ready in ([0-9.]+)s", " ".join(self.output().split()))
        return float(found.group(1)) if found else None

    def token(self) -> str:
        found = re.search(r"trd_[A-Za-z0-9_\-]+", self.output())
        if not found:
            raise SystemExit(f"the first start printed no admin token:\n{self.output()}")
        return found.group(0)

    def cpu_ticks(self) -> int:
        if self.proc is None:
            return 0
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime


@contextlib.contextmanager
def running(up: Up) -> Iterator[float]:
    try:
        yield up.start()
    finally:
        up.stop()


def ready_times(home: Path, pycache: Path, logs: Path, starts: int) -> list[float]:
    times = []
    for i in range(starts):
        with running(Up(home, pycache, logs / f"up-{home.name}-{i}.log")) as ready_s:
            times.append(ready_s)
    return times


def emit_ready(name: str, times: list[float]) -> None:
    median = statistics.median(times)
    emit(
        benchmark=name,
        median_s=round(median, 3),
        p90_s=round(quantile(times, 0.9), 3),
        min_s=round(min(times), 3),
        max_s=round(max(times), 3),
        target_s=READY_TARGET_S,
        meets_target=median < READY_TARGET_S,
        runs=len(times),
    )


# -- seeding 100,000 runs -----------------------------------------------------------------


class _OneTransaction:
    """A Database whose reads and writes all go to one open write transaction: the
    store's own `create_run` then inserts 100,000 runs with one commit, not 100,000."""

    dialect = "sqlite"

    def __init__(self, conn: Connection, url: str) -> None:
        self.url = url
        self._conn = conn

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        yield self._conn

    read = write

    def close(self) -> None:
        pass


def seed_runs(store: Store, count: int) -> list[str]:
    """`count` runs in the default project, as `treadle run` and scripts leave them: one
    real pipeline run, and the rest copies of the kinds of record it and `start_run`
    make, a minute apart, in 5 experiments, 90 % SUCCEEDED, 8 % FAILED with a
    traceback, 2 % CANCELLED. Returns their ids newest first, the order of the API."""
    rng = random.Random(0)
    pipeline, _ = find_pipeline(f"{PIPELINES_FILE}:linear10")
    # A real run gives a real pipeline version for the seeded pipeline runs to point at.
    real = run_pipeline(pipeline, {}, store, RunOptions(use_cache=False))
    version_id = store.runs.get_run(real.id).pipeline_version_id
    project = store.projects.get_project(PROJECT)
    user = store.settings.user
    experiments = [
        store.projects.ensure_experiment(project.id, f"exp-{e}", user).id
        for e in range(EXPERIMENTS)
    ]
    oldest = time.time() - 60.0 * count
    seeded: list[str] = []
    with store.db.write() as conn:
        runs = SqlRunStore(_OneTransaction(conn, store.db.url))
        for i in range(count - 1):
            created = oldest + 60.0 * i
            ended = created + rng.uniform(2.0, 900.0)
            roll = rng.random()
            state = (
                RunState.SUCCEEDED
                if roll < 0.9
                else RunState.FAILED
                if roll < 0.98
                else RunState.CANCELLED
            )
            from_pipeline = i % 2 == 0
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(created))
            run_id = new_id()
            runs.create_run(
                RunRecord(
                    id=run_id,
                    project_id=project.id,
                    experiment_id=experiments[i % EXPERIMENTS],
                    pipeline_version_id=version_id if from_pipeline else None,
                    name=f"linear10-{stamp}" if from_pipeline else f"run-{stamp}",
                    state=state,
                    created_by=user,
                    executor="local" if from_pipeline else "script",
                    attempt=1 if rng.random() < 0.97 else 2,
                    created_at=created,
                    started_at=created + 0.01,
                    ended_at=ended,
                    error=(
                        'Traceback (most recent call last):\n  File "train.py", line 41, in '
                        f"fit\nValueError: loss is nan at step {rng.randrange(10_000)}\n"
                        if state is RunState.FAILED
                        else None
                    ),
                    heartbeat_at=max(created + 0.01, ended - rng.uniform(0.0, 5.0)),
                )
            )
            seeded.append(run_id)
    return [real.id, *reversed(seeded)]


def count_runs(store: Store) -> int:
    with store.db.read() as conn:
        return int(conn.execute("SELECT COUNT(*) AS n FROM runs")[0]["n"])


# -- API latency ----------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    requests: list[tuple[str, Any]]
    """(path, what the answer must hold: a run id, or the ids of a page in order)"""
    latencies_ms: list[float] = field(default_factory=list)


def check(case: Case, path: str, response: httpx.Response, expected: Any) -> None:
    """Fail loudly unless the answer is the run or exactly the page of runs expected."""
    if response.status_code != 200:
        raise SystemExit(f"GET {path} answered {response.status_code}: {response.text[:300]}")
    body = response.json()
    got = body["id"] if isinstance(body, dict) else [r["id"] for r in body]
    if got != expected:
        raise SystemExit(f"{case.name}: GET {path} gave {str(got)[:200]}, not {expected!r:.200}")


def latency_cases(order: list[str], rng: random.Random) -> list[Case]:
    def page(offset: int) -> tuple[str, list[str]]:
        return f"{API}/runs?limit={PAGE}&offset={offset}", order[offset : offset + PAGE]

    ids = [rng.choice(order) for _ in range(REQUESTS)]
    return [
        Case("api_get_run", [(f"{API}/runs/{i}", i) for i in ids]),
        Case("api_list_runs_first_page", [page(0)] * REQUESTS),
        Case(
            "api_list_runs_random_offset",
            [page(rng.randrange(0, len(order) - PAGE + 1)) for _ in range(REQUESTS)],
        ),
    ]


def measure_latency(url: str, token: str, order: list[str]) -> None:
    rng = random.Random(1)
    cases = latency_cases(order, rng)
    with http_client(url, token) as client:
        # Untimed: the server's first requests open a SQLite connection per worker
        # thread and fill its caches; one-off costs a long-running server has paid.
        for case in cases:
            for path, expected in case.requests[:WARM_UP_REQUESTS]:
                check(case, path, client.get(path), expected)
        # Interleaved in random order, so a pause of the machine falls on all three alike.
        work = [(case, path, expected) for case in cases for path, expected in case.requests]
        rng.shuffle(work)
        for case, path, expected in work:
            start = time.perf_counter()
            response = client.get(path)
            case.latencies_ms.append((time.perf_counter() - start) * 1000)
            check(case, path, response, expected)
    for case in cases:
        p50 = statistics.median(case.latencies_ms)
        emit(
            benchmark=case.name,
            runs_in_store=len(order),
            p50_ms=round(p50, 2),
            p90_ms=round(quantile(case.latencies_ms, 0.9), 2),
            p99_ms=round(quantile(case.latencies_ms, 0.99), 2),
            max_ms=round(max(case.latencies_ms), 2),
            target_ms=LATENCY_TARGET_MS,
            meets_target=p50 < LATENCY_TARGET_MS,
            requests=len(case.latencies_ms),
        )


# -- 20 clients logging metrics -----------------------------------------------------------


@dataclass
class Tally:
    """What one client sent and what the server acknowledged."""

    run_id: str
    rows_sent: int = 0
    rows_acked: int = 0
    errors: int = 0
    first_error: str | None = None
    latencies_ms: list[float] = field(default_factory=list)


def log_until(
    url: str, token: str, tally: Tally, go: threading.Barrier, stop: threading.Event
) -> None:
    """One training job's logger: POST 100 values at a time to its run until stopped."""
    path = f"{API}/runs/{tally.run_id}/metrics"
    per_key = BATCH // len(METRIC_KEYS)
    step = 0
    with http_client(url, token) as client:
        go.wait()
        while not stop.is_set():
            now = time.time()
            rows = [
                {"key": key, "value": 1.0 / (step + s + 1), "step": step + s, "timestamp": now}
                for key in METRIC_KEYS
                for s in range(per_key)
            ]
            step += per_key
            tally.rows_sent += len(rows)
            start = time.perf_counter()
            try:
                response = client.post(path, json={"metrics": rows})
            except httpx.HTTPError as exc:
                tally.errors += 1
                tally.first_error = tally.first_error or f"{type(exc).__name__}: {exc}"
                continue
            tally.latencies_ms.append((time.perf_counter() - start) * 1000)
            if response.status_code == 200 and response.json() == {"stored": len(rows)}:
                tally.rows_acked += len(rows)
            else:
                tally.errors += 1
                tally.first_error = tally.first_error or (
                    f"{response.status_code}: {response.text[:200]}"
                )


def create_metric_runs(store: Store) -> list[RunRecord]:
    project = store.projects.get_project(PROJECT)
    experiment = store.projects.ensure_experiment(project.id, "bench-api-ingest", "bench")
    now = time.time()
    records = [
        RunRecord(
            id=new_id(),
            project_id=project.id,
            experiment_id=experiment.id,
            pipeline_version_id=None,
            name=f"ingest-{i:02d}",
            state=RunState.RUNNING,
            created_by=store.settings.user,
            executor="script",
            attempt=1,
            created_at=now,
            started_at=now,
            heartbeat_at=now,
        )
        for i in range(CLIENTS)
    ]
    for record in records:
        store.runs.create_run(record)
    return records


def busy_ticks() -> int:
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return user + nice + system + irq + softirq + steal


def stored_rows(store: Store, run_ids: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    """Rows per run in the database, and distinct (key, step) pairs per run: a row written
    twice must not make up for one lost."""
    marks = ", ".join(f":r{i}" for i in range(len(run_ids)))
    args = {f"r{i}": r for i, r in enumerate(run_ids)}
    with store.db.read() as conn:
        rows = conn.execute(
            "SELECT run_id, COUNT(*) AS n, COUNT(DISTINCT key || '@' || step) AS d "
            f"FROM metrics WHERE run_id IN ({marks}) GROUP BY run_id",
            args,
        )
    return {r["run_id"]: r["n"] for r in rows}, {r["run_id"]: r["d"] for r in rows}


def measure_ingest(up: Up, store: Store, token: str, duration_s: float) -> None:
    runs = create_metric_runs(store)
    tallies = [Tally(r.id) for r in runs]
    go = threading.Barrier(CLIENTS + 1)
    stop = threading.Event()
    threads = [
        threading.Thread(target=log_until, args=(up.url, token, t, go, stop), daemon=True)
        for t in tallies
    ]
    # Each run's process would send heartbeats while it logs; so does this one, or the
    # server's reaper would fail the runs after 30 s, and they are writers too.
    beats = [Heartbeat(store, r.id).__enter__() for r in runs]
    try:
        for t in threads:
            t.start()
        tick = os.sysconf("SC_CLK_TCK")
        server_before, busy_before, client_before = (
            up.cpu_ticks(),
            busy_ticks(),
            time.process_time(),
        )
        go.wait()
        began = time.perf_counter()
        time.sleep(duration_s)
        stop.set()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - began
        server_s = (up.cpu_ticks() - server_before) / tick
        client_s = time.process_time() - client_before
        busy_s = (busy_ticks() - busy_before) / tick
    finally:
        stop.set()
        go.abort()  # frees the client threads if the start failed before they were let go
        for beat in beats:
            beat.__exit__(None, None, None)
    with http_client(up.url, token) as client:
        via_api = {
            r.id: len(client.get(f"{API}/runs/{r.id}/metrics").raise_for_status().json())
            for r in runs
        }
    for r in runs:
        store.runs.set_run_state(r.id, RunState.SUCCEEDED, at=time.time())
    in_db, distinct = stored_rows(store, [r.id for r in runs])
    sent = sum(t.rows_sent for t in tallies)
    acked = sum(t.rows_acked for t in tallies)
    errors = sum(t.errors for t in tallies)
    every_row = all(
        t.rows_sent == via_api[t.run_id] == in_db.get(t.run_id, 0) == distinct.get(t.run_id, 0)
        for t in tallies
    )
    latencies = [ms for t in tallies for ms in t.latencies_ms]
    emit(
        benchmark="api_log_metrics_20_clients",
        clients=CLIENTS,
        duration_s=round(elapsed, 2),
        rows_per_request=BATCH,
        requests=len(latencies) + errors,
        rows_sent=sent,
        rows_acked=acked,
        rows_stored_api=sum(via_api.values()),
        rows_stored_db=sum(in_db.values()),
        errors=errors,
        first_error=next((t.first_error for t in tallies if t.first_error), None),
        rows_per_s=round(sum(in_db.values()) / elapsed),
        request_p50_ms=round(statistics.median(latencies), 2) if latencies else None,
        request_p90_ms=round(quantile(latencies, 0.9), 2) if latencies else None,
        request_p99_ms=round(quantile(latencies, 0.99), 2) if latencies else None,
        request_max_ms=round(max(latencies), 2) if latencies else None,
        # Writers queue for SQLite's one write lock; how many waited long shows the tail.
        requests_over_100ms=sum(ms > 100 for ms in latencies),
        server_cpu_cores=round(server_s / elapsed, 2),
        client_cpu_cores=round(client_s / elapsed, 2),
        other_cpu_cores=round(max(0.0, busy_s - server_s - client_s) / elapsed, 2),
        target="rows sent == rows stored (per run, via the API and in the database), 0 errors",
        meets_target=every_row and acked == sent and errors == 0,
    )


# -- the whole benchmark ------------------------------------------------------------------


def environment() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import fastapi
    import uvicorn

    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "fastapi": fastapi.__version__,
        "uvicorn": uvicorn.__version__,
        "httpx": httpx.__version__,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"log metrics for {QUICK_INGEST_S:.0f} s, not 60"
    )
    args = parser.parse_args()
    emit(benchmark="api_environment", **environment())
    with tempfile.TemporaryDirectory(prefix="treadle-bench-api-") as tmp_name:
        tmp = Path(tmp_name)
        pycache, logs = tmp / "pycache", tmp / "logs"
        logs.mkdir()
        # Untimed, in a home of its own: fills the bytecode folder, so the first start
        # below measures creating the home and not compiling Python.
        ready_times(tmp / "warm-up-home", pycache, logs, 1)

        home = tmp / "home"
        first = Up(home, pycache, logs / "up-first.log")
        with running(first) as first_s:
            pass
        token = first.token()
        emit(
            benchmark="api_up_ready_first_start_empty_home",
            wall_s=round(first_s, 3),
            server_reported_s=first.reported_ready_s(),
            target_s=None,
            meets_target=None,
            runs=1,
        )
        emit_ready("api_up_ready_existing_home", ready_times(home, pycache, logs, UP_STARTS))

        store = open_store(settings_of(home), migrate=False)
        try:
            began = time.perf_counter()
            order = seed_runs(store, STORE_RUNS)
            if count_runs(store) != STORE_RUNS or len(set(order)) != STORE_RUNS:
                raise SystemExit(f"seeding left {count_runs(store)} runs, not {STORE_RUNS}")
            emit(
                benchmark="api_seed_runs",
                runs=STORE_RUNS,
                seconds=round(time.perf_counter() - began, 2),
                target_s=None,
                meets_target=None,
            )
            emit_ready(
                "api_up_ready_existing_home_100k_runs",
                ready_times(home, pycache, logs, UP_STARTS),
            )
            up = Up(home, pycache, logs / "up-api.log")
            with running(up):
                measure_latency(up.url, token, order)
                measure_ingest(up, store, token, QUICK_INGEST_S if args.quick else INGEST_S)
        finally:
            store.close()


if __name__ == "__main__":
    main()
