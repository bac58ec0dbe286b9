"""`treadle up`: the control plane of one machine, in one process.

First start: the home is created, the database migrated, an `admin` user made and its
token printed once. Later starts print nothing secret. The API listens on 127.0.0.1
unless told otherwise; the deployment controller keeps the model servers of deployments
that name a port running.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from treadle.automation.scheduler import Scheduler
from treadle.automation.triggers import Dispatcher
from treadle.config import Settings
from treadle.errors import ConflictError, NotFoundError
from treadle.loop.runner import PolicyRunner
from treadle.monitoring.monitor import Monitoring
from treadle.server.auth import issue_token
from treadle.server.controller import DeploymentController
from treadle.server.runpool import RunPool
from treadle.store import Store, open_store
from treadle.store.records import RunRecord
from treadle.tracking.heartbeat import STALE_SECONDS

ADMIN = "admin"


@dataclasses.dataclass(frozen=True)
class UpOptions:
    host: str = "127.0.0.1"
    port: int = 8080


def bootstrap(store: Store) -> str | None:
    """Make the admin user and its token on first start; returns the token then, else None.
    The default project exists and the admin owns it."""
    try:
        store.auth.get_user(ADMIN)
        return None
    except NotFoundError:
        pass
    try:
        admin = store.auth.create_user(ADMIN, is_admin=True)
    except ConflictError:
        return None  # another server on the same database made it a moment ago
    project = store.projects.ensure_project(store.settings.project, ADMIN)
    store.auth.set_member(project.id, admin.id, "owner")
    _, secret = issue_token(store, admin, "first start")
    store.audit.record(None, ADMIN, "bootstrap", "user", ADMIN)
    return secret


def reap_abandoned_runs(store: Store, announce: Callable[[str], None]) -> None:
    """RUNNING runs whose executor fell silent become FAILED, so they can be resumed."""
    for run in store.runs.fail_stale(time.time() - STALE_SECONDS, time.time()):
        announce(
            f"run {run.id[:8]} ({run.name}) lost its executor; it is FAILED now, and "
            f"`treadle runs resume {run.id[:8]}` finishes it"
        )


def _reap_until(store: Store, announce: Callable[[str], None], stop: threading.Event) -> None:
    while not stop.wait(STALE_SECONDS / 3):
        try:
            reap_abandoned_runs(store, announce)
        except Exception as exc:  # keep watching; a busy database passes
            announce(f"checking for abandoned runs failed: {exc}")


def serve(
    settings: Settings,
    options: UpOptions,
    announce: Callable[[str], None],
    started: float | None = None,
) -> None:
    """Run the control plane until Ctrl-C. `started` (time.monotonic() when the command
    began) makes the readiness time include start-up imports."""
    import uvicorn

    from treadle.server.app import create_app

    began = time.monotonic() if started is None else started
    store = open_store(settings)
    secret = bootstrap(store)
    runs = RunPool()

    def launch(
        project_id: str, pipeline: str, params: dict[str, str], cause: dict[str, Any], user: str
    ) -> RunRecord:
        return runs.launch(store, project_id, pipeline, params, cause, user)

    def cancel(run_id: str) -> bool:
        return runs.cancel(store.runs.get_run(run_id))

    scheduler = Scheduler(store, launch, cancel, announce=announce)
    dispatcher = Dispatcher(store, launch, announce=announce)
    app = create_app(store, runs, dispatcher)
    if secret is not None:
        announce("created the admin user; its token (shown this once, keep it):")
        announce(f"    {secret}")
        announce(
            f"use it with: export TREADLE_URL=http://{options.host}:{options.port} "
            f"TREADLE_TOKEN={secret}"
        )
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )

    stop = threading.Event()
    reap_abandoned_runs(store, announce)
    threading.Thread(
        target=_reap_until, args=(store, announce, stop), daemon=True, name="treadle-reaper"
    ).start()
    controller = DeploymentController(store, announce)

    class _Server(uvicorn.Server):
        caught: tuple[int, ...] = ()

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn raises the signal that stopped it again on the way out, which would
            # end the process before the controller stops its model servers: hold it
            with super().capture_signals():
                yield
                self.caught = tuple(self._captured_signals)
                self._captured_signals.clear()

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            announce(
                f"treadle is up on http://{options.host}:{options.port} "
                f"(ready in {time.monotonic() - began:.2f}s; API docs at /docs)"
            )

    controller.start()
    loops = (
        ("scheduler", scheduler.run_forever),
        ("triggers", dispatcher.run_forever),
        ("monitors", Monitoring(store, announce=announce).run_forever),
        ("policies", PolicyRunner(store, launch, announce=announce).run_forever),
    )
    for name, loop in loops:
        threading.Thread(target=loop, args=(stop,), daemon=True, name=f"treadle-{name}").start()
    server = _Server(config)
    try:
        server.run()
    finally:
        stop.set()
        runs.shutdown()
        controller.stop()
    for caught in reversed(server.caught):
        signal.raise_signal(caught)
