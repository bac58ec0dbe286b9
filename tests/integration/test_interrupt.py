"""Ctrl-C on `treadle run`: the run is left CANCELLED with its finished steps kept, and
`treadle runs resume` finishes it without re-running them."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from treadle.config import Settings
from treadle.store import Store, open_store
from treadle.types import RunState, StepState

REPO = Path(__file__).resolve().parents[2]
PIPELINE = REPO / "tests" / "resources" / "eng_interrupt.py"
_NEXT_TO_PYTHON = Path(sys.executable).with_name("treadle")
TREADLE = _NEXT_TO_PYTHON if _NEXT_TO_PYTHON.exists() else REPO / ".venv" / "bin" / "treadle"

pytestmark = pytest.mark.slow


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TREADLE_")}
    env["TREADLE_HOME"] = str(home)
    return env


def _store(home: Path) -> Store:
    settings = Settings(
        home=home, db_url=f"sqlite:///{home / 'treadle.db'}", artifact_url=str(home / "artifacts")
    )
    # the CLI migrates the database; the test only reads it
    return open_store(settings, migrate=False)


def _wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@dataclasses.dataclass(frozen=True)
class Interrupted:
    executor: str
    home: Path
    workdir: Path
    run_id: str
    returncode: int
    exit_seconds: float
    stdout: str
    stderr: str
    run_state: RunState
    run_error: str | None
    steps: dict[str, StepState]
    sleepy_pid: int


def _step_states(store: Store) -> dict[str, tuple[str, str]]:
    """node -> (run id, state) of every step run so far; empty while the schema is new."""
    try:
        with store.db.read() as conn:
            rows = conn.execute("SELECT run_id, node, state FROM step_runs")
    except Exception:  # the CLI has not created the tables yet
        return {}
    return {r["node"]: (r["run_id"], r["state"]) for r in rows}


def _interrupt(tmp: Path, executor: str) -> Interrupted:
    home, workdir = tmp / "home", tmp / "work"
    workdir.mkdir()
    (workdir / "sleep_seconds").write_text("60")
    proc = subprocess.Popen(
        [str(TREADLE), "run", str(PIPELINE), "-p", f"workdir={workdir}", "--executor", executor],
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    store: Store | None = None
    try:
        assert _wait_for((home / "treadle.db").exists, 30), "the CLI never created its store"
        store = _store(home)

        def first_done_second_running() -> bool:
            assert proc.poll() is None, f"treadle run ended early: {proc.communicate()}"
            states = _step_states(store)  # type: ignore[arg-type]
            # interrupt while the second step is in the middle of its sleep
            return states.get("quick", ("", ""))[1] == "SUCCEEDED" and (
                states.get("sleepy", ("", ""))[1] == "RUNNING" and (workdir / "sleepy.pid").exists()
            )

        assert _wait_for(first_done_second_running, 30), "the first step never finished"
        run_id = _step_states(store)["quick"][0]
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        try:
            stdout, stderr = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        exit_seconds = time.monotonic() - sent
        record = store.runs.get_run(run_id)
        return Interrupted(
            executor=executor,
            home=home,
            workdir=workdir,
            run_id=run_id,
            returncode=proc.returncode,
            exit_seconds=exit_seconds,
            stdout=stdout,
            stderr=stderr,
            run_state=record.state,
            run_error=record.error,
            steps={s.node: s.state for s in store.runs.list_steps(run_id)},
            sleepy_pid=int((workdir / "sleepy.pid").read_text()),
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if store is not None:
            store.close()


@pytest.fixture(scope="module", params=["local", "process"])
def interrupted(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Interrupted:
    executor: str = request.param
    return _interrupt(tmp_path_factory.mktemp(f"interrupt-{executor}"), executor)


def test_ctrl_c_leaves_the_run_cancelled_and_keeps_the_finished_step(
    interrupted: Interrupted,
) -> None:
    assert interrupted.exit_seconds < 10, (
        f"treadle run took {interrupted.exit_seconds:.1f}s to stop after Ctrl-C"
    )
    assert interrupted.run_state is RunState.CANCELLED, interrupted.stderr
    assert "interrupted" in (interrupted.run_error or "")
    assert interrupted.steps == {"quick": StepState.SUCCEEDED, "sleepy": StepState.CANCELLED}
    assert "Traceback" not in interrupted.stderr
    # the sleeping step does not live on in a worker process
    assert _wait_for(lambda: _pid_gone(interrupted.sleepy_pid), 5)


def test_ctrl_c_exits_with_code_130(interrupted: Interrupted) -> None:
    assert interrupted.returncode == 130
    assert "interrupted" in interrupted.stderr


def test_resume_after_ctrl_c_finishes_without_rerunning_the_first_step(
    interrupted: Interrupted,
) -> None:
    (interrupted.workdir / "sleep_seconds").write_text("0.1")
    resumed = subprocess.run(
        [str(TREADLE), "runs", "resume", interrupted.run_id, "--executor", interrupted.executor],
        env=_env(interrupted.home),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr

    store = _store(interrupted.home)
    try:
        record = store.runs.get_run(interrupted.run_id)
        assert record.state is RunState.SUCCEEDED, record.error
        assert record.attempt == 2
        steps = store.runs.list_steps(interrupted.run_id)
        quick = [s for s in steps if s.node == "quick"]
        sleepy = sorted((s for s in steps if s.node == "sleepy"), key=lambda s: s.started_at)
        assert [s.state for s in quick] == [StepState.SUCCEEDED]
        assert [s.state for s in sleepy] == [StepState.CANCELLED, StepState.SUCCEEDED]
        outputs = store.artifacts.step_outputs(sleepy[-1].id)
        assert store.objects.get_bytes(outputs["output"].sha256) == b"2"
    finally:
        store.close()
    assert (interrupted.workdir / "quick.count").read_text() == "ran\n"
