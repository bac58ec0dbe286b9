"""Tracking benchmarks: many single `log_metric` calls, and many short runs.

Prints one JSON object per line. Each timing ends only once the rows are in the
database, and the row counts are checked, so buffering cannot hide unwritten work.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import treadle
from treadle.config import Settings, load_settings
from treadle.store import Store, open_store

SINGLE_CALLS = 10_000
SINGLE_CALLS_REPEATS = 5
SINGLE_CALLS_TARGET_S = 0.25
MANY_RUNS = 100
METRICS_PER_RUN = 100


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def metric_rows(store: Store, run_id: str) -> int:
    with store.db.read() as conn:
        rows = conn.execute("SELECT COUNT(*) AS n FROM metrics WHERE run_id = :r", {"r": run_id})
    return int(rows[0]["n"])


def check_run(store: Store, run_id: str, rows: int) -> None:
    """Fail loudly unless the run ended SUCCEEDED with exactly `rows` metric rows."""
    state = store.runs.get_run(run_id).state.value
    found = metric_rows(store, run_id)
    if state != "SUCCEEDED" or found != rows:
        raise SystemExit(f"run {run_id} is {state} with {found} metric rows; expected {rows}")


def single_calls(settings: Settings) -> tuple[float, str]:
    """10,000 calls as a training loop makes them; timed until the run has ended."""
    with treadle.start_run(name="bench-single-calls", settings=settings) as run:
        start = time.perf_counter()
        for i in range(SINGLE_CALLS):
            treadle.log_metric("loss", 1.0 / (i + 1), step=i)
    elapsed = time.perf_counter() - start
    return elapsed, run.id


def bench_single_calls(settings: Settings, store: Store) -> None:
    # One untimed run first, so one-off costs (first queries, lazy imports) stay out.
    with treadle.start_run(name="bench-warm-up", settings=settings):
        treadle.log_metric("warm", 0.0)
    times = []
    for _ in range(SINGLE_CALLS_REPEATS):
        elapsed, run_id = single_calls(settings)
        check_run(store, run_id, SINGLE_CALLS)
        times.append(elapsed)
    median = statistics.median(times)
    emit(
        benchmark="log_metric_10000_single_calls",
        median_s=round(median, 4),
        max_s=round(max(times), 4),
        calls_per_s=round(SINGLE_CALLS / median),
        target_s=SINGLE_CALLS_TARGET_S,
        meets_target=median <= SINGLE_CALLS_TARGET_S,
        runs=len(times),
    )


def bench_many_runs(settings: Settings, store: Store) -> None:
    """100 short script runs of 100 metrics each: the cost of opening and ending runs."""
    ids = []
    start = time.perf_counter()
    for r in range(MANY_RUNS):
        with treadle.start_run(name=f"bench-run-{r}", settings=settings) as run:
            for m in range(METRICS_PER_RUN):
                treadle.log_metric(f"metric_{m}", float(m))
        ids.append(run.id)
    elapsed = time.perf_counter() - start
    for run_id in ids:
        check_run(store, run_id, METRICS_PER_RUN)
    emit(
        benchmark="start_run_100_runs_x_100_metrics",
        total_s=round(elapsed, 3),
        ms_per_run=round(elapsed / MANY_RUNS * 1000, 2),
        target_s=None,
        meets_target=None,
        runs=MANY_RUNS,
    )


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="treadle-bench-") as tmp:
        settings = load_settings({"TREADLE_HOME": str(Path(tmp) / "home")})
        store = open_store(settings)
        try:
            bench_single_calls(settings, store)
            bench_many_runs(settings, store)
        finally:
            store.close()


if __name__ == "__main__":
    main()
