"""`treadle up` keeps the servers of deployments that name a port running: it starts
them, restarts one that dies, takes them back after being killed itself, and stops them
on Ctrl-C. Real processes, real HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from serving_support import MODEL, REPO, env, free_port, module_home, ok, wait_for

pytestmark = pytest.mark.slow


def _ready(port: int) -> bool:
    try:
        return (
            httpx.get(
                f"http://127.0.0.1:{port}/v2/health/ready", timeout=1, trust_env=False
            ).status_code
            == 200
        )
    except httpx.HTTPError:
        return False


def _up(home: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "treadle", "up", "--port", str(port)],
        cwd=REPO,
        env=env(home),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def _pid(home: Path, name: str) -> int:
    return int((home / "run" / "deployments" / f"default--{name}.pid").read_text().split()[0])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def test_the_controller_starts_restarts_adopts_and_stops_deployment_servers(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    home = module_home(tmp_path_factory, "controller")
    served = free_port()
    ok(home, "deploy", f"{MODEL}@champion", "--name", "api", "--port", str(served))
    log = tmp_path / "up.log"
    up = _up(home, free_port(), log)
    try:
        assert wait_for(lambda: _ready(served), 60), log.read_text()
        first = _pid(home, "api")

        os.kill(first, signal.SIGKILL)  # the model server dies: it comes back
        assert wait_for(lambda: _pid(home, "api") != first and _ready(served), 60), log.read_text()
        second = _pid(home, "api")

        up.kill()  # the control plane dies hard: the server keeps answering...
        up.wait(10)
        assert _ready(served)
        up = _up(home, free_port(), log)  # ...and the new control plane takes it back
        assert wait_for(lambda: "taken back" in log.read_text(), 30), log.read_text()
        assert _pid(home, "api") == second and _ready(served)
    finally:
        up.send_signal(signal.SIGINT)  # Ctrl-C stops everything it runs
        up.wait(30)
    assert wait_for(lambda: not _alive(second), 15)
    assert not _ready(served)
