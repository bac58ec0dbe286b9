"""The Ray executor on a real local Ray (2 CPUs, started once for this file).

The same pipelines run through the local executor and through Ray, each in a home of
its own, must leave the same records: run and step states, step names, attempts, cache
hits, errors, logs, params, metric histories, and every lineage edge with the sha256 of
its artifact. Then what only Ray does: code shipped from the pipeline's folder or the
deployed package, fan-out items side by side in separate workers, resources hints,
and timeouts that kill a running worker or drop a task Ray has not started.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from treadle import Resources
from treadle.config import Settings
from treadle.dsl import Pipeline
from treadle.engine import RunOptions, find_pipeline, resume_run, run_pipeline
from treadle.engine.executors import make_executor
from treadle.engine.loader import load_file
from treadle.errors import ConfigError, DefinitionError, InvalidInputError
from treadle.packaging import build_package, read_package, source_of
from treadle.server.runpool import RunPool
from treadle.store import Store, open_store
from treadle.store.records import StepRunRecord
from treadle.tracking import Run
from treadle.types import RunState, StepState

ray = pytest.importorskip("ray", reason="the Ray executor needs `pip install 'treadle[ray]'`")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
RESOURCES = REPO / "tests" / "resources"
QUICKSTART = REPO / "examples" / "quickstart" / "pipeline.py"
EXECUTORS = ("local", "ray")
_NEXT_TO_PYTHON = Path(sys.executable).with_name("treadle")
TREADLE = _NEXT_TO_PYTHON if _NEXT_TO_PYTHON.exists() else REPO / ".venv" / "bin" / "treadle"
RAY_WORKING_DIRS = os.sep + "working_dir_files" + os.sep
"""Where Ray unpacks the code a task's runtime_env ships."""


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    try:
        yield
    finally:
        ray.shutdown()


def open_home(home: Path) -> Store:
    return open_store(
        Settings(
            home=home, db_url=f"sqlite:///{home / 'treadle.db'}", artifact_url=str(home / "art")
        )
    )


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[dict[str, Store]]:
    """A home per executor, so each run starts from the same empty records."""
    opened = {name: open_home(tmp_path / name) for name in EXECUTORS}
    yield opened
    for store in opened.values():
        store.close()


def resource(name: str) -> Any:
    return load_file(RESOURCES / f"{name}.py")


def run(pipeline: Pipeline[Any, Any], store: Store, params: dict[str, Any], **options: Any) -> Run:
    source = getattr(pipeline.fn, "__globals__", {}).get("__file__")
    return run_pipeline(pipeline, params, store, RunOptions(**options), source)


def log_of(store: Store, step_run: StepRunRecord) -> str | None:
    if step_run.log_uri is None:
        return None
    return store.objects.get_bytes(store.objects.sha_of(step_run.log_uri)).decode()


def records(store: Store, result: Run) -> dict[str, Any]:
    """What a run recorded, without ids and times. A model's sha256 is left out: a
    skops file differs from one save to the next on any executor."""
    result = result.refresh()
    steps = store.runs.list_steps(result.id)
    by_id = {s.id: s for s in steps}
    with store.db.read() as conn:
        rows = conn.execute(
            "SELECT l.step_run_id, l.direction, l.name, a.sha256, a.kind FROM lineage l "
            "JOIN artifacts a ON a.id = l.artifact_id "
            "JOIN step_runs s ON s.id = l.step_run_id WHERE s.run_id = :r",
            {"r": result.id},
        )
    edges = sorted(
        (
            by_id[r["step_run_id"]].node,
            by_id[r["step_run_id"]].attempt,
            r["direction"],
            r["name"],
            r["kind"],
            "<model>" if r["kind"] == "model" else r["sha256"],
        )
        for r in rows
    )
    return {
        "state": result.state,
        "error": result.error,
        "params": result.params,
        "metrics": {
            key: [(m.step, m.value) for m in result.metric_history(key)]
            for key in sorted(result.metrics)
        },
        "steps": sorted(
            (
                s.node,
                s.step_name,
                s.attempt,
                s.state,
                s.cached_from is not None,
                (s.error or "").strip().splitlines()[-1:],
                log_of(store, s),
            )
            for s in steps
        ),
        "edges": edges,
    }


def on_both(
    stores: dict[str, Store], call: Callable[[Store, str], Run]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`call(store, executor)` in each executor's home; the records of the two runs."""
    results = {name: call(stores[name], name) for name in EXECUTORS}
    assert results["ray"].record.executor == "ray"
    return records(stores["local"], results["local"]), records(stores["ray"], results["ray"])


# -- the same records on both executors ------------------------------------------------

SAME: dict[str, tuple[Callable[[], Pipeline[Any, Any]], dict[str, Any], RunState]] = {
    "quickstart": (
        lambda: find_pipeline(str(QUICKSTART))[0],
        {"rows": 150, "c": 0.5},
        RunState.SUCCEEDED,
    ),
    "fan_out": (lambda: resource("eng_basic").fan, {"n": 6}, RunState.SUCCEEDED),
    "multi_output": (lambda: resource("eng_basic").multi, {}, RunState.SUCCEEDED),
    "failing_step": (lambda: resource("eng_fail").failing, {}, RunState.FAILED),
    "metrics": (lambda: resource("eng_metrics").metrics_flow, {"epochs": 3}, RunState.SUCCEEDED),
}


@pytest.mark.parametrize("name", list(SAME))
def test_a_pipeline_leaves_the_same_records_on_ray_as_on_local(
    stores: dict[str, Store], name: str
) -> None:
    make, params, state = SAME[name]
    pipeline = make()
    local, on_ray = on_both(
        stores, lambda store, ex: run(pipeline, store, params, executor=ex, use_cache=False)
    )
    assert on_ray == local
    assert local["state"] is state, local["error"]
    assert local["steps"], "the run recorded no steps"


def test_a_cached_rerun_is_answered_from_the_cache_on_both(stores: dict[str, Store]) -> None:
    fan = resource("eng_basic").fan

    def twice(store: Store, executor: str) -> Run:
        first = run(fan, store, {"n": 4}, executor=executor)
        assert first.state is RunState.SUCCEEDED, first.error
        return run(fan, store, {"n": 4}, executor=executor)

    local, on_ray = on_both(stores, twice)
    assert on_ray == local
    assert {s[3] for s in local["steps"]} == {StepState.CACHED}


def test_retries_make_the_same_attempts(stores: dict[str, Store], tmp_path: Path) -> None:
    flaky = resource("eng_flaky")

    def retried(store: Store, executor: str) -> Run:
        counter = tmp_path / f"counter-{executor}"
        return run(flaky.retry_twice, store, {"counter": str(counter)}, executor=executor)

    local, on_ray = on_both(stores, retried)
    # the counter's path is a parameter; each executor had its own
    for recorded in (local, on_ray):
        recorded["params"].pop("counter")
    assert on_ray == local
    assert [s[2:4] for s in local["steps"]] == [
        (1, StepState.FAILED),
        (2, StepState.FAILED),
        (3, StepState.SUCCEEDED),
    ]


def test_resume_after_a_failure_reruns_the_same_steps(
    stores: dict[str, Store], tmp_path: Path
) -> None:
    flaky = resource("eng_flaky")

    def failed_then_resumed(store: Store, executor: str) -> Run:
        work = tmp_path / f"work-{executor}"
        work.mkdir()
        failed = run(flaky.fan_resume, store, {"workdir": str(work)}, executor=executor)
        assert failed.state is RunState.FAILED
        return resume_run(failed.id, store, RunOptions(executor=executor))

    local, on_ray = on_both(stores, failed_then_resumed)
    for recorded in (local, on_ray):
        recorded["params"].pop("workdir")
    assert on_ray == local
    assert local["state"] is RunState.SUCCEEDED
    attempts = [(s[0], s[2], s[3]) for s in local["steps"] if s[0] == "fragile_item[1]"]
    assert attempts == [
        ("fragile_item[1]", 1, StepState.FAILED),
        ("fragile_item[1]", 2, StepState.SUCCEEDED),
    ]


def test_a_timeout_fails_the_step_alike_and_kills_the_ray_worker(
    stores: dict[str, Store], tmp_path: Path
) -> None:
    slow = resource("eng_slow")
    pid_files = {name: tmp_path / f"pid-{name}" for name in EXECUTORS}
    # Ray's workers for tests/resources started, so that the step starts within its
    # timeout (a timeout while still queued has its own test)
    with_workers = open_home(tmp_path / "warm-up")
    assert run(resource("eng_basic").linear, with_workers, {}, executor="ray").state is (
        RunState.SUCCEEDED
    )
    with_workers.close()

    def timed_out(store: Store, executor: str) -> Run:
        params = {"seconds": 6.0, "pid_file": str(pid_files[executor])}
        return run(slow.napping, store, params, executor=executor)

    started = time.monotonic()
    local, on_ray = on_both(stores, timed_out)
    assert time.monotonic() - started < 20
    for recorded in (local, on_ray):
        recorded["params"].pop("pid_file")
    assert on_ray == local
    assert local["steps"] == [
        (
            "nap",
            "nap",
            1,
            StepState.FAILED,
            False,
            ["TimeoutError: step 'nap' ran longer than 1.0s"],
            None,
        )
    ]
    pid = int(pid_files["ray"].read_text())
    assert pid != os.getpid()
    assert wait_for(lambda: gone(pid), 10), f"the Ray worker {pid} still runs the step"
    time.sleep(0.5)
    assert not Path(str(pid_files["ray"]) + ".done").exists()


def test_a_cancelled_run_stops_its_ray_task_and_resumes_on_ray(
    stores: dict[str, Store], tmp_path: Path
) -> None:
    store = stores["ray"]
    (tmp_path / "sleep_seconds").write_text("60")
    pid_file = tmp_path / "sleepy.pid"
    cancel = threading.Event()
    watcher = threading.Thread(
        target=lambda: wait_for(pid_file.exists, 60) and cancel.set(), daemon=True
    )
    watcher.start()
    interruptible = resource("eng_interrupt").interruptible
    params = {"workdir": str(tmp_path)}
    cancelled = run(interruptible, store, params, executor="ray", cancel=cancel)
    assert cancelled.state is RunState.CANCELLED
    assert cancelled.steps["quick"].state is StepState.SUCCEEDED
    assert cancelled.steps["sleepy"].state is StepState.CANCELLED
    pid = int(pid_file.read_text())
    assert wait_for(lambda: gone(pid), 10), f"the Ray worker {pid} still sleeps"

    (tmp_path / "sleep_seconds").write_text("0")
    resumed = resume_run(cancelled.id, store)
    assert resumed.state is RunState.SUCCEEDED, resumed.error
    assert resumed.record.executor == "ray"
    assert resumed.outputs["sleepy"] == 2
    assert (tmp_path / "quick.count").read_text() == "ran\n"


# -- what only Ray does ------------------------------------------------------------------


def test_fan_out_items_run_side_by_side_in_workers_loading_shipped_code(
    stores: dict[str, Store], tmp_path: Path
) -> None:
    where = resource("eng_ray_where")
    folder = tmp_path / "meeting"
    folder.mkdir()
    result = run(where.spread, stores["ray"], {"n": 4, "folder": str(folder)}, executor="ray")
    assert result.state is RunState.SUCCEEDED, result.error
    reports = [result.outputs[f"meet[{i}]"] for i in range(4)]
    assert sorted(r["x"] for r in reports) == [0, 1, 2, 3]
    # each item waited until another had started: two workers at once, none of them here
    pids = {r["pid"] for r in reports}
    assert len(pids) >= 2
    assert os.getpid() not in pids
    for r in reports:  # imported from the zip Ray unpacked, not from tests/resources
        assert RAY_WORKING_DIRS in r["file"], r["file"]
        assert not r["file"].startswith(str(RESOURCES))


def test_a_step_whose_worker_dies_is_recorded_failed(stores: dict[str, Store]) -> None:
    result = run(resource("eng_crash").crashing, stores["ray"], {"code": 3}, executor="ray")
    assert result.state is RunState.FAILED
    die = result.steps["die"]
    assert die.state is StepState.FAILED
    assert die.ended_at is not None
    assert "the Ray task ended without a result" in (die.error or "")
    assert "step 'die' failed" in (result.error or "")
    assert result.outputs["survivor"] == 2


def test_resources_hints_become_ray_resources(stores: dict[str, Store]) -> None:
    where = resource("eng_ray_where")
    result = run(where.placed, stores["ray"], {}, executor="ray")
    assert result.state is RunState.SUCCEEDED, result.error
    assert result.outputs["assigned"] == {"CPU": 2.0, "memory": 64 * 2**20}


def test_a_step_the_local_ray_cannot_place_is_refused_before_the_run(
    stores: dict[str, Store],
) -> None:
    store = stores["ray"]
    with pytest.raises(ConfigError, match=r"needs_a_gpu.*gpu=1.*has \(0\)"):
        run(resource("eng_ray_where").on_a_gpu, store, {}, executor="ray")
    with store.db.read() as conn:
        assert conn.execute("SELECT COUNT(*) AS n FROM runs", {})[0]["n"] == 0


def test_a_malformed_memory_hint_is_refused_with_what_to_write(stores: dict[str, Store]) -> None:
    load = resource("eng_basic").load
    steps = {"load": load.configure(resources=Resources(memory="lots"))}
    with pytest.raises(DefinitionError, match=r"step 'load'.*'lots'.*'512Mi'"):
        make_executor("ray", stores["ray"], steps)
    steps = {"load": load.configure(resources=Resources(cpu=-1))}
    with pytest.raises(DefinitionError, match=r"step 'load': resources cpu=-1 is not a count"):
        make_executor("ray", stores["ray"], steps)


def test_a_timeout_while_queued_in_ray_is_recorded_on_the_step(
    stores: dict[str, Store], tmp_path: Path
) -> None:
    where = resource("eng_ray_where")
    marker = tmp_path / "hog-runs"
    result = run(
        where.crowded, stores["ray"], {"seconds": 8.0, "marker": str(marker)}, executor="ray"
    )
    assert result.state is RunState.FAILED
    steps = result.steps
    assert steps["hog"].state is StepState.SUCCEEDED
    assert steps["queued"].state is StepState.FAILED
    assert "TimeoutError" in (steps["queued"].error or "")
    assert steps["queued"].ended_at is not None


def test_a_deployed_package_runs_on_ray_from_its_own_code(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "helpers.py").write_text("def twice(x: int) -> int:\n    return 2 * x\n")
    (folder / "flow.py").write_text(
        "from helpers import twice\n"
        "from treadle import pipeline, step\n\n"
        "@step\n"
        "def double(x: int) -> dict:\n"
        "    import helpers\n"
        "    return {'value': twice(x), 'helpers': helpers.__file__}\n\n"
        "@pipeline\n"
        "def deployed(x: int = 21) -> None:\n"
        "    double(x)\n"
    )
    pipeline, source = find_pipeline(str(folder / "flow.py"))
    package = build_package(pipeline, source, executor="ray")
    assert package.manifest.executor == "ray"
    assert package.manifest.hash != build_package(pipeline, source).manifest.hash

    store = open_home(tmp_path / "server-home")
    project = store.projects.ensure_project("default", "tester")
    store.objects.put_bytes(package.data)
    _, version = store.pipelines.ensure_version(
        project.id, "deployed", package.manifest.hash, package.manifest.spec, source_of(package)
    )
    store.pipelines.set_current(project.id, "deployed", version.id)
    pool = RunPool()
    try:
        submitted = pool.submit(store, "deployed", {"x": "5"})
        assert submitted.executor == "ray"
        done = wait_for(lambda: store.runs.get_run(submitted.id).state is not RunState.RUNNING, 60)
        assert done, "the deployed run did not finish"
    finally:
        pool.shutdown()
    result = Run(store, store.runs.get_run(submitted.id))
    assert result.state is RunState.SUCCEEDED, result.error
    output = result.outputs["double"]
    assert output["value"] == 10
    # the package's helpers module, unpacked by Ray: not the build folder nor the home's copy
    assert RAY_WORKING_DIRS in output["helpers"], output["helpers"]
    store.close()


def test_a_package_cannot_change_its_executor_after_the_build(tmp_path: Path) -> None:
    pipeline, source = find_pipeline(f"{RESOURCES / 'eng_basic.py'}:linear")
    package = build_package(pipeline, source, executor="ray")
    assert read_package(package.data).manifest.executor == "ray"
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(package.data)).read("treadle.json"))
    manifest["executor"] = "local"
    changed = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(package.data)) as old,
        zipfile.ZipFile(changed, "w") as new,
    ):
        for info in old.infolist():
            data = old.read(info)
            new.writestr(info, json.dumps(manifest) if info.filename == "treadle.json" else data)
    with pytest.raises(InvalidInputError, match="hash does not match"):
        read_package(changed.getvalue())

    env = {k: v for k, v in os.environ.items() if not k.startswith(("TREADLE_", "RAY_"))}
    env["TREADLE_HOME"] = str(tmp_path / "home")
    done = subprocess.run(
        [str(TREADLE), "pipeline", "build", source, "--executor", "spark", "--no-smoke"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "--executor 'spark' is not an executor" in done.stderr
    assert "local, process, ray" in done.stderr
    assert not (tmp_path / "dist").exists()


def test_an_unreachable_cluster_is_refused_before_the_run(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TREADLE_", "RAY_"))}
    env["TREADLE_HOME"] = str(tmp_path / "home")
    started = time.monotonic()
    target = f"{RESOURCES / 'eng_basic.py'}:linear"
    address = f"127.0.0.1:{port}"
    done = subprocess.run(
        [str(TREADLE), "run", target, "--executor", "ray", "--ray-address", address],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in done.stderr
    assert "--ray-address" in done.stderr
    assert time.monotonic() - started < 30
    store = open_home(tmp_path / "home")
    with store.db.read() as conn:
        assert conn.execute("SELECT COUNT(*) AS n FROM runs", {})[0]["n"] == 0
    store.close()


def test_settings_name_the_cluster(tmp_path: Path) -> None:
    from treadle.config import load_settings

    found = load_settings({"TREADLE_HOME": str(tmp_path), "RAY_ADDRESS": "10.1.2.3:6379"})
    assert found.ray_address == "10.1.2.3:6379"
    (tmp_path / "config.toml").write_text('ray_address = "auto"\n')
    assert load_settings({"TREADLE_HOME": str(tmp_path)}).ray_address == "auto"
    assert load_settings({"TREADLE_HOME": str(tmp_path), "RAY_ADDRESS": "h:1"}).ray_address == "h:1"


# -- helpers ---------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie answers signal 0 but runs nothing
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True
