"""Runs submitted to `treadle up` execute on the server: they are recorded at once, can
be cancelled while running and resumed later, and bad submissions write nothing."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from serving_support import REPO, env, free_port, wait_for

import treadle
from treadle.errors import InvalidInputError, NotFoundError
from treadle.types import RunState

pytestmark = [pytest.mark.slow, pytest.mark.every_backend]
WAITING = REPO / "tests" / "resources" / "api_waiting.py"


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, make_home: Callable[..., Path], backend: str
) -> Iterator[tuple[Path, treadle.Client]]:
    home = make_home(tmp_path_factory.mktemp("api-runs") / "home", backend)
    marker = home.parent / "seeded"
    marker.touch()
    # the pipeline is known to the server once it has run there
    seeded = subprocess.run(
        [sys.executable, "-m", "treadle", "run", str(WAITING), "-p", f"marker={marker}"],
        cwd=REPO,
        env=env(home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr
    port = free_port()
    log = home.parent / "up.log"
    up = subprocess.Popen(
        [sys.executable, "-m", "treadle", "up", "--port", str(port)],
        cwd=REPO,
        env=env(home),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    try:
        # the token is printed before the server listens: wait until it says it is up
        assert wait_for(lambda: "treadle is up" in log.read_text(), 30), log.read_text()
        token = re.search(r"trd_[A-Za-z0-9_-]+", log.read_text())
        assert token is not None
        with treadle.Client(f"http://127.0.0.1:{port}", token.group(0), project="default") as c:
            yield home, c
    finally:
        up.terminate()
        up.wait(30)


def _until_done(client: treadle.Client, run_id: str, seconds: float = 60) -> RunState:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = client.get_run(run_id).state
        if state is not RunState.RUNNING:
            return state
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} still RUNNING after {seconds}s")


def test_a_submitted_run_executes_on_the_server(server: tuple[Path, treadle.Client]) -> None:
    home, client = server
    marker = home.parent / "go-now"
    marker.touch()
    run = client.submit_run("waiting", {"n": 5, "marker": str(marker)}, experiment="api")
    assert run.state is RunState.RUNNING
    assert _until_done(client, run.id) is RunState.SUCCEEDED
    assert client.get_params(run.id)["n"] == "5"
    steps = {s.node: s.state for s in client.list_steps(run.id)}
    assert steps == {
        "prepare": treadle.StepState.SUCCEEDED,
        "wait_for": treadle.StepState.SUCCEEDED,
    }


def test_bad_submissions_are_refused_and_record_nothing(
    server: tuple[Path, treadle.Client],
) -> None:
    _, client = server
    before = len(client.list_runs(limit=1000))
    with pytest.raises(InvalidInputError, match="'n'"):
        client.submit_run("waiting", {"n": "many"})
    with pytest.raises(InvalidInputError, match="no parameter"):
        client.submit_run("waiting", {"nope": "1"})
    with pytest.raises(NotFoundError, match="no pipeline named"):
        client.submit_run("no-such-pipeline")
    assert len(client.list_runs(limit=1000)) == before


def test_cancel_then_resume(server: tuple[Path, treadle.Client]) -> None:
    home, client = server
    marker = home.parent / "resume-me"
    run = client.submit_run("waiting", {"marker": str(marker)})
    assert wait_for(
        lambda: any(s.node == "prepare" and s.state.done for s in client.list_steps(run.id)),
        30,
    )
    client.cancel_run(run.id)
    assert _until_done(client, run.id, 15) is RunState.CANCELLED

    marker.touch()
    client.resume_run(run.id)
    assert wait_for(lambda: client.get_run(run.id).attempt == 2, 15)
    assert _until_done(client, run.id) is RunState.SUCCEEDED
    prepared = [s for s in client.list_steps(run.id) if s.node == "prepare"]
    assert len(prepared) == 1  # the finished step was reused, not run again
