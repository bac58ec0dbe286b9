"""Pipeline benchmarks: fresh-process `treadle run` and in-process orchestration overhead.

Prints one JSON object per line. Every timed run is checked against the store (step
runs, artifacts, lineage edges), so a fast run that recorded less fails instead of
looking good.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from treadle import RunOptions, run_pipeline
from treadle.config import load_settings
from treadle.engine import find_pipeline
from treadle.store import Store, open_store
from treadle.types import StepState

HERE = Path(__file__).resolve().parent
PIPELINES_FILE = HERE / "pipelines.py"
sys.path.insert(0, str(HERE))

from pipelines import FANOUT_ITEMS, LINEAR_STEPS  # noqa: E402

FRESH_REPEATS = 15
IN_PROCESS_REPEATS = {"linear10": 100, "fanout50": 20}
FRESH_TARGET_S = {"linear10": 0.35, "fanout50": 0.6}
STEP_OVERHEAD_TARGET_MS = 1.0


@dataclass(frozen=True)
class Expected:
    """What one successful run of a benchmark pipeline must leave in the store."""

    step_runs: int
    artifacts: int
    lineage_edges: int


EXPECTED = {
    # Every step has one output artifact; each step but the first reads one.
    "linear10": Expected(LINEAR_STEPS, LINEAR_STEPS, LINEAR_STEPS + (LINEAR_STEPS - 1)),
    # numbers + 50 inc + total; edges: 52 outputs, 50 inc inputs, 50 inputs of the join.
    "fanout50": Expected(
        FANOUT_ITEMS + 2, FANOUT_ITEMS + 2, (FANOUT_ITEMS + 2) + FANOUT_ITEMS + FANOUT_ITEMS
    ),
}


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def treadle_command() -> list[str]:
    # The console script next to this interpreter is what users run; fall back to
    # `-m treadle` when the package is installed without scripts.
    script = Path(sys.executable).parent / "treadle"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "treadle"]


def isolated_env(home: Path, pycache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TREADLE_")}
    env["TREADLE_HOME"] = str(home)
    # An installed treadle has bytecode compiled; an editable checkout under
    # PYTHONDONTWRITEBYTECODE=1 would recompile every module in every process (about
    # 20 ms here). A private bytecode folder measures the installed case without
    # writing __pycache__ into the source tree.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def run_ids(store: Store) -> set[str]:
    with store.db.read() as conn:
        return {r["id"] for r in conn.execute("SELECT id FROM runs")}


def recorded(store: Store, run_id: str) -> dict[str, Any]:
    with store.db.read() as conn:
        state = conn.execute("SELECT state FROM runs WHERE id = :r", {"r": run_id})[0]["state"]
        steps = conn.execute(
            "SELECT state, COUNT(*) AS n FROM step_runs WHERE run_id = :r GROUP BY state",
            {"r": run_id},
        )
        artifacts = conn.execute(
            "SELECT COUNT(*) AS n FROM artifacts WHERE run_id = :r", {"r": run_id}
        )[0]["n"]
        edges = conn.execute(
            "SELECT COUNT(*) AS n FROM lineage l JOIN step_runs s ON s.id = l.step_run_id "
            "WHERE s.run_id = :r",
            {"r": run_id},
        )[0]["n"]
    return {
        "state": state,
        "steps": {r["state"]: r["n"] for r in steps},
        "artifacts": artifacts,
        "edges": edges,
    }


def verify(store: Store, run_id: str, name: str, *, cached: bool) -> None:
    """Fail loudly unless the run recorded every step run, artifact and lineage edge."""
    want = EXPECTED[name]
    got = recorded(store, run_id)
    step_state = StepState.CACHED.value if cached else StepState.SUCCEEDED.value
    # A cached step run points at the artifacts of the run that computed them, so it
    # adds lineage edges but no artifacts of its own.
    want_artifacts = 0 if cached else want.artifacts
    ok = (
        got["state"] == "SUCCEEDED"
        and got["steps"] == {step_state: want.step_runs}
        and got["artifacts"] == want_artifacts
        and got["edges"] == want.lineage_edges
    )
    if not ok:
        raise SystemExit(
            f"{name} run {run_id} recorded {got}; expected state SUCCEEDED, "
            f"{want.step_runs} step runs {step_state}, {want_artifacts} artifacts, "
            f"{want.lineage_edges} lineage edges"
        )


def treadle_run(home: Path, pycache: Path, name: str) -> float:
    """One `treadle run` as a new process; returns its wall seconds."""
    cmd = [*treadle_command(), "run", f"{PIPELINES_FILE}:{name}", "--no-cache"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=isolated_env(home, pycache), capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"`{' '.join(cmd)}` exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return elapsed


def fresh_run(home: Path, pycache: Path, store: Store, name: str) -> float:
    """A timed `treadle run`, verified against the store afterwards."""
    before = run_ids(store)
    elapsed = treadle_run(home, pycache, name)
    new = run_ids(store) - before
    if len(new) != 1:
        raise SystemExit(f"{name}: expected one new run in the store, found {len(new)}")
    verify(store, new.pop(), name, cached=False)
    return elapsed


def bench_fresh_process() -> None:
    with tempfile.TemporaryDirectory(prefix="treadle-bench-") as tmp:
        pycache = Path(tmp) / "pycache"
        # Untimed, in a home of its own: fills the bytecode folder, so that the first
        # run below measures creating the database and not compiling Python.
        treadle_run(Path(tmp) / "warm-up-home", pycache, "fanout50")
        # The first run in an empty home also creates and migrates the database, which
        # users pay once; it is reported apart from the steady state.
        home = Path(tmp) / "home"
        first = treadle_run(home, pycache, "linear10")
        store = open_store(load_settings({"TREADLE_HOME": str(home)}), migrate=False)
        try:
            (only,) = run_ids(store)
            verify(store, only, "linear10", cached=False)
            emit(
                benchmark="fresh_process_linear10_first_run_empty_home",
                wall_s=round(first, 3),
                target_s=None,
                meets_target=None,
                runs=1,
            )
            for name in ("linear10", "fanout50"):
                times = [fresh_run(home, pycache, store, name) for _ in range(FRESH_REPEATS)]
                median = statistics.median(times)
                emit(
                    benchmark=f"fresh_process_{name}",
                    median_s=round(median, 3),
                    p90_s=round(p90(times), 3),
                    min_s=round(min(times), 3),
                    target_s=FRESH_TARGET_S[name],
                    meets_target=median <= FRESH_TARGET_S[name],
                    runs=len(times),
                )
        finally:
            store.close()


def bench_in_process() -> None:
    with tempfile.TemporaryDirectory(prefix="treadle-bench-") as tmp:
        store = open_store(load_settings({"TREADLE_HOME": str(Path(tmp) / "home")}))
        try:
            for name in ("linear10", "fanout50"):
                pipeline, _ = find_pipeline(f"{PIPELINES_FILE}:{name}")
                steps = EXPECTED[name].step_runs
                repeats = IN_PROCESS_REPEATS[name]
                for cached in (False, True):
                    options = RunOptions(use_cache=cached)
                    # Warm-up: imports, prepared statements, and (for the cached case)
                    # the results the timed runs will be answered from.
                    run_pipeline(pipeline, {}, store, options)
                    times = []
                    for _ in range(repeats):
                        start = time.perf_counter()
                        run = run_pipeline(pipeline, {}, store, options)
                        times.append(time.perf_counter() - start)
                        verify(store, run.id, name, cached=cached)
                    per_step_ms = sum(times) / (repeats * steps) * 1000
                    emit(
                        benchmark=f"in_process_{name}_{'cached' if cached else 'uncached'}",
                        ms_per_step=round(per_step_ms, 3),
                        median_run_s=round(statistics.median(times), 4),
                        step_runs_per_run=steps,
                        target_ms=STEP_OVERHEAD_TARGET_MS,
                        meets_target=per_step_ms <= STEP_OVERHEAD_TARGET_MS,
                        runs=repeats,
                    )
        finally:
            store.close()


def main() -> None:
    bench_fresh_process()
    bench_in_process()


if __name__ == "__main__":
    main()
