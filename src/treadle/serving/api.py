"""Serving from Python: deployments and model servers without the command line.

from treadle.serving import deploy, set_traffic, rollback, start_server

deploy("churn@champion", "churn-api")
server = start_server(deployment="churn-api")      # a real server process
set_traffic("churn-api", "canary", candidate="challenger", canary=0.1)
rollback("churn-api")
server.stop()
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from treadle.config import load_settings
from treadle.errors import InvalidInputError, StoreUnavailableError
from treadle.registry.refs import parse_ref
from treadle.serving import deployments
from treadle.store import Store, open_store
from treadle.store.records import DeploymentRevisionRecord


def _open(store: Store | None) -> tuple[Store, str]:
    store = store or open_store(load_settings())
    project = store.projects.ensure_project(store.settings.project, store.settings.user)
    return store, project.id


def deploy(
    ref: str,
    name: str,
    *,
    policy: str = "single",
    candidate: str | None = None,
    canary: float = 0.1,
    store: Store | None = None,
) -> DeploymentRevisionRecord:
    """Create (or change) deployment `name` serving `ref` (e.g. `churn@champion`)."""
    store, project = _open(store)
    spec = deployments.make_spec(
        parse_ref(ref), policy=policy, candidate=candidate, canary_weight=canary
    )
    return deployments.deploy(store, project, name, spec)[1]


def set_traffic(
    name: str,
    policy: str,
    *,
    candidate: str | None = None,
    canary: float = 0.1,
    store: Store | None = None,
) -> DeploymentRevisionRecord:
    """Switch a deployment to `single`, `canary` (candidate gets `canary` of requests) or
    `shadow` (candidate sees copies)."""
    store, project = _open(store)
    return deployments.set_traffic(
        store, project, name, policy, candidate=candidate, canary_weight=canary
    )[1]


def rollback(name: str, *, store: Store | None = None) -> DeploymentRevisionRecord:
    store, project = _open(store)
    return deployments.rollback(store, project, name)


def follow(name: str, *, store: Store | None = None) -> DeploymentRevisionRecord:
    store, project = _open(store)
    return deployments.follow(store, project, name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """A model server running as its own process (`treadle serve` or `treadle
    deployments serve`), ready when returned."""

    def __init__(self, args: list[str], port: int, env: dict[str, str], log: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self._out = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "treadle", *args, "--port", str(port)],
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def wait_ready(self, timeout: float = 60.0) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StoreUnavailableError(
                    f"the model server exited with code {self.process.returncode}: "
                    f"{self.log.read_text(errors='replace').strip()[-500:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise StoreUnavailableError(f"the model server on {self.url} was not ready in {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._out.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_server(
    ref: str | None = None,
    *,
    deployment: str | None = None,
    port: int | None = None,
    batch: bool = True,
    log_predictions: bool = True,
    extra_args: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> ServerProcess:
    """Start a model server process for a model reference or a deployment and wait until
    it is ready. Stop it with `.stop()` (or use it as a context manager)."""
    if (ref is None) == (deployment is None):
        raise InvalidInputError("give a model reference or a deployment name, not both")
    args = ["serve", ref] if ref is not None else ["deployments", "serve", str(deployment)]
    args += ["--batch" if batch else "--no-batch"]
    args += ["--log-predictions" if log_predictions else "--no-log-predictions"]
    args += extra_args or []
    settings = load_settings(env)
    logs = settings.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    chosen = port or free_port()
    process_env = dict(os.environ if env is None else env)
    process_env.setdefault("TREADLE_HOME", str(settings.home))
    log = logs / f"server-{chosen}.log"
    return ServerProcess(args, chosen, process_env, log).wait_ready()
