"""Ray executor benchmark: the 1 → 50 → 1 and 1 → 500 → 1 fan-outs of
benchmarks/pipelines.py on a local Ray (2 CPUs) and on the local executor, side by side.

Prints one JSON object per line. For each executor and size, one untimed warm-up run
(Ray starts the workers for the shipped code), then timed runs without the cache, each
checked against the store: every step run SUCCEEDED, every artifact and lineage edge
recorded.

    overhead per step = (wall - critical-path step work) / step runs

The critical-path step work is the time the step functions themselves take along the
longest path (`numbers`, one `inc`, `total`), timed here by calling them directly: a
few microseconds, since the steps are trivial. What remains is what treadle and the
executor spend per step: scheduling, sending the task, loading inputs, saving outputs
and recording every state change. Starting Ray is reported on its own line.
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from treadle import RunOptions, run_pipeline
from treadle.config import load_settings
from treadle.engine import find_pipeline
from treadle.store import Store, open_store

HERE = Path(__file__).resolve().parent
PIPELINES_FILE = HERE / "pipelines.py"
sys.path.insert(0, str(HERE))

from bench_pipelines import recorded  # noqa: E402
from pipelines import inc, numbers, total  # noqa: E402

SIZES = {"fanout50": 50, "fanout500": 500}
REPEATS = {"fanout50": 5, "fanout500": 3}
RAY_CPUS = 2
TARGET_MS = 20.0
"""Ray's overhead per step at 500 steps."""
MEASURE = "(wall - critical-path step work) / step runs"


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def critical_path_work_s(n: int) -> float:
    """The step functions' own time along the longest path, best of 20."""
    best = float("inf")
    for _ in range(20):
        start = time.perf_counter()
        values = numbers.fn(n)
        inc.fn(values[-1])
        total.fn([v + 1 for v in values])
        best = min(best, time.perf_counter() - start)
    return best


def check(store: Store, run_id: str, n: int) -> None:
    """Fail loudly unless the run recorded every step run, artifact and lineage edge."""
    got = recorded(store, run_id)
    # n + 2 outputs; each inc reads one item, the join reads n
    want_edges = (n + 2) + n + n
    want = {
        "state": "SUCCEEDED",
        "steps": {"SUCCEEDED": n + 2},
        "artifacts": n + 2,
        "edges": want_edges,
    }
    if got != want:
        raise SystemExit(
            f"run {run_id} recorded {got}; expected "
            f"{n + 2} SUCCEEDED step runs, {n + 2} artifacts, {want_edges} edges"
        )


def bench(store: Store, executor: str) -> None:
    pipeline, source = find_pipeline(f"{PIPELINES_FILE}:fanout50")
    for name, n in SIZES.items():
        options = RunOptions(executor=executor, use_cache=False)
        check(store, run_pipeline(pipeline, {"n": n}, store, options, source).id, n)
        walls = []
        for _ in range(REPEATS[name]):
            start = time.perf_counter()
            run = run_pipeline(pipeline, {"n": n}, store, options, source)
            walls.append(time.perf_counter() - start)
            check(store, run.id, n)
        wall = statistics.median(walls)
        work = critical_path_work_s(n)
        steps = n + 2
        per_step_ms = (wall - work) / steps * 1000
        target = TARGET_MS if executor == "ray" else None
        emit(
            benchmark=f"{executor}_{name}",
            executor=executor,
            step_runs=steps,
            median_wall_s=round(wall, 3),
            critical_path_work_ms=round(work * 1000, 4),
            overhead_ms_per_step=round(per_step_ms, 2),
            measure=MEASURE,
            target_ms=target,
            meets_target=None if target is None else per_step_ms <= target,
            runs=len(walls),
        )


def main() -> None:
    import ray

    with tempfile.TemporaryDirectory(prefix="treadle-bench-ray-") as tmp:
        store = open_store(load_settings({"TREADLE_HOME": str(Path(tmp) / "home")}))
        try:
            bench(store, "local")
            start = time.perf_counter()
            ray.init(
                address="local",
                num_cpus=RAY_CPUS,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
            )
            emit(
                benchmark="ray_local_start",
                wall_s=round(time.perf_counter() - start, 2),
                cpus=RAY_CPUS,
                target_s=None,
                meets_target=None,
            )
            try:
                bench(store, "ray")
            finally:
                ray.shutdown()
        finally:
            store.close()


if __name__ == "__main__":
    main()
