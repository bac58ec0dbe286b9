"""The deployment controller: keeps a model-server process running for every deployment
that names a port, restarts one that dies, and takes back after its own restart the
servers it had started (their pid files say which), so `kill -9` of the control plane
loses no deployment.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from treadle.store import Store

POLL_SECONDS = 2.0
MAX_BACKOFF = 60.0


@dataclasses.dataclass
class _Child:
    project: str
    name: str
    port: int
    pid: int
    process: subprocess.Popen[bytes] | None  # None when taken back from a pid file
    restarts: int = 0
    next_start: float = 0.0

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        try:
            os.kill(self.pid, 0)
        except OSError:
            return False
        return True


class DeploymentController:
    def __init__(self, store: Store, announce: Callable[[str], None]) -> None:
        self.store = store
        self.announce = announce
        self.folder = store.settings.home / "run" / "deployments"
        self.logs = store.settings.home / "logs" / "deployments"
        self.children: dict[tuple[str, str], _Child] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="treadle-controller", daemon=True)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self._adopt()
        self.reconcile()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        for child in list(self.children.values()):
            self._terminate(child)
        self.children.clear()

    def _loop(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            try:
                self.reconcile()
            except Exception as exc:  # the controller must outlive one bad pass
                self.announce(f"deployment controller: {exc}")

    # -- the work -----------------------------------------------------------------------

    def wanted(self) -> dict[tuple[str, str], int]:
        """(project, deployment) -> port, for every deployment that asks to be served."""
        out = {}
        for project in self.store.projects.list_projects():
            for d in self.store.deployments.list_deployments(project.id):
                port = d.spec.get("port")
                if isinstance(port, int):
                    out[(project.name, d.name)] = port
        return out

    def reconcile(self) -> None:
        wanted = self.wanted()
        for key, child in list(self.children.items()):
            if key not in wanted or wanted[key] != child.port:
                self._terminate(child)
                del self.children[key]
        now = time.monotonic()
        for key, port in wanted.items():
            existing = self.children.get(key)
            if existing is not None and existing.alive():
                continue
            if existing is not None:
                child = existing
                if now < child.next_start:
                    continue
                child.restarts += 1
                self.announce(
                    f"deployment {key[1]} ({key[0]}) stopped; restarting (restart {child.restarts})"
                )
            self._spawn(key, port, existing)

    def _spawn(self, key: tuple[str, str], port: int, previous: _Child | None) -> None:
        project, name = key
        env = dict(os.environ)
        env["TREADLE_HOME"] = str(self.store.settings.home)
        env["TREADLE_DB_URL"] = self.store.settings.db_url
        env["TREADLE_ARTIFACT_URL"] = self.store.settings.artifact_url
        env["TREADLE_PROJECT"] = project
        log = (self.logs / f"{project}--{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "treadle", "deployments", "serve", name, "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C meant for `treadle up` is handled by stop()
        )
        log.close()
        restarts = previous.restarts if previous else 0
        delay = min(MAX_BACKOFF, 2.0**restarts) if restarts else 0.0
        self.children[key] = _Child(
            project, name, port, process.pid, process, restarts, time.monotonic() + delay
        )
        self._pid_file(key).write_text(f"{process.pid} {port}\n")
        if previous is None:
            self.announce(f"deployment {name} ({project}) serving on http://127.0.0.1:{port}")

    def _terminate(self, child: _Child) -> None:
        with contextlib.suppress(OSError):
            os.kill(child.pid, signal.SIGTERM)
        if child.process is not None:
            try:
                child.process.wait(10)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        self._pid_file((child.project, child.name)).unlink(missing_ok=True)

    def _pid_file(self, key: tuple[str, str]) -> Path:
        return self.folder / f"{key[0]}--{key[1]}.pid"

    def _adopt(self) -> None:
        """Take back the servers a previous controller started and left running."""
        for path in self.folder.glob("*.pid"):
            project, _, name = path.stem.partition("--")
            try:
                pid_text, port_text = path.read_text().split()
                child = _Child(project, name, int(port_text), int(pid_text), None)
            except ValueError:
                path.unlink(missing_ok=True)
                continue
            if child.alive():
                self.children[(project, name)] = child
                self.announce(
                    f"deployment {name} ({project}) still serving on port {child.port}: taken back"
                )
            else:
                path.unlink(missing_ok=True)
