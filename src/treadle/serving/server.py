"""Running a model server: what it serves (a model reference or a deployment), the
watcher that rolls new revisions in, and uvicorn around the ASGI app.

The watcher polls the store. When the versions to serve change — an alias moved, a
canary was set, a rollback happened — it loads and warms the new revision in a worker
thread while the old one keeps answering, then swaps: no request is dropped.

Serving only reads the registry, so the store may be the home's own or one read through
a treadle server (`StoreView`); the one write, recording a deployment's new revision
when its aliases move, is the `sync` a `DeploymentSource` is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, cast

from treadle.config import deployment_log
from treadle.models.format import Manifest
from treadle.registry.refs import ModelRef, parse_ref, resolve
from treadle.serving import deployments
from treadle.serving.app import Batching, Limits, ModelServer
from treadle.serving.feedback import FeedbackLog
from treadle.serving.metrics import ServerMetrics
from treadle.serving.predlog import PredictionLog
from treadle.serving.traffic import TargetSpec, load_router
from treadle.store import Store
from treadle.store.protocols import StoreView
from treadle.store.records import DeploymentRecord, DeploymentRevisionRecord

log = logging.getLogger("treadle.serving")


class Source(Protocol):
    """What a server serves; `poll` says which versions, under a key that changes when
    they do."""

    name: str
    label: str

    def poll(self) -> tuple[Any, int | None, list[TargetSpec]]: ...


class RefSource:
    """`treadle serve churn@champion`: one version, following the alias if it is one."""

    def __init__(self, store: StoreView, project_id: str, ref: ModelRef | str) -> None:
        self.store, self.project_id = store, project_id
        self.ref = parse_ref(ref) if isinstance(ref, str) else ref
        self.name = self.ref.name
        self.label = str(self.ref)

    def poll(self) -> tuple[Any, int | None, list[TargetSpec]]:
        _, version = resolve(self.store, self.project_id, self.ref)
        return version.id, None, [TargetSpec(version.id, version.version, "primary", 1.0)]


Sync = Callable[[DeploymentRecord], DeploymentRevisionRecord]
"""Records a new revision of a deployment if what its spec names has moved, and answers
the revision to serve."""


class DeploymentSource:
    """A managed deployment: its spec is synced (aliases followed, revisions recorded)
    and its current revision served.

    `sync` defaults to `deployments.sync` on `store`, which records revisions itself: the
    home's own store. A store read through a server passes the server's sync instead,
    whose route records the revision as its caller."""

    def __init__(
        self, store: StoreView, project_id: str, deployment: str, sync: Sync | None = None
    ) -> None:
        self.store, self.project_id = store, project_id
        record = store.deployments.get_deployment(project_id, deployment)
        self.name = record.spec["model"]
        self.label = deployment
        self.deployment = deployment
        self._sync = sync or self._sync_in_store

    def poll(self) -> tuple[Any, int | None, list[TargetSpec]]:
        record = self.store.deployments.get_deployment(self.project_id, self.deployment)
        revision = self._sync(record)
        return revision.number, revision.number, deployments.targets_of(revision)

    def _sync_in_store(self, record: DeploymentRecord) -> DeploymentRevisionRecord:
        # typed on the home's Store, but it reaches only what a StoreView has; a store
        # read through a server refuses to record a revision, and says so
        return deployments.sync(cast(Store, self.store), self.project_id, record)


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8001
    batching: Batching = Batching()
    limits: Limits = Limits()
    poll_seconds: float = 1.0
    log_predictions: bool = True


class Watcher:
    """Keeps a ModelServer on the revision its source names."""

    def __init__(
        self,
        store: StoreView,
        source: Source,
        server: ModelServer,
        poll_seconds: float,
        announce: Callable[[str], None],
    ) -> None:
        self.store, self.source, self.server = store, source, server
        self.poll_seconds = poll_seconds
        self.announce = announce
        self.key: Any = None
        self._models: dict[str, tuple[Manifest, Any]] = {}
        self._task: asyncio.Task[None] | None = None

    def refresh(self) -> bool:
        """Load what the source names now if it changed; True if a swap happened."""
        key, revision, specs = self.source.poll()
        if key == self.key:
            return False
        # typed on the home's Store; loading only reads versions, objects and settings
        store = cast(Store, self.store)
        router = load_router(store, self.source.name, revision, specs, self._models)
        live = {s.version_id for s in specs}
        self._models = {k: v for k, v in self._models.items() if k in live}
        self.server.swap(router)
        self.key = key
        described = ", ".join(
            f"v{s.version} {s.role}" + (f" {s.weight * 100:g}%" if s.role == "canary" else "")
            for s in specs
        )
        self.announce(
            f"serving {self.source.label}: {described}"
            + (f" (revision {revision})" if revision is not None else "")
        )
        return True

    async def start(self, server: ModelServer) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.refresh)
        calm_garbage_collector()
        self._task = asyncio.create_task(self._loop())

    async def stop(self, server: ModelServer) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await loop.run_in_executor(None, self.refresh)
            except Exception as exc:  # keep serving the revision that works
                log.error("could not roll in the new revision of %s: %s", self.source.label, exc)
                self.announce(
                    f"could not roll in the new revision: {exc}; still serving the previous one"
                )


def calm_garbage_collector() -> None:
    """Keep pauses out of request latency. Everything alive once the model is loaded
    (modules, the model, the app) lives until the server stops; frozen, the collector no
    longer walks it, and a larger first generation means fewer passes. A shorter switch
    interval hands the interpreter back to the request loop sooner when the prediction
    log's writer thread holds it."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    sys.setswitchinterval(0.001)


def build(
    store: StoreView,
    source: Source,
    options: ServeOptions,
    announce: Callable[[str], None] = print,
) -> tuple[ModelServer, Watcher]:
    predictions = feedback = None
    if options.log_predictions:
        predictions = PredictionLog(prediction_folder(store, source.label))
        feedback = FeedbackLog(feedback_folder(store, source.label))
    server = ModelServer(
        source.name,
        metrics=ServerMetrics(),
        predictions=predictions,
        feedback=feedback,
        batching=options.batching,
        limits=options.limits,
    )
    watcher = Watcher(store, source, server, options.poll_seconds, announce)
    server.on_startup = watcher.start
    server.on_shutdown = watcher.stop
    return server, watcher


def prediction_folder(store: StoreView, label: str) -> Path:
    """Under the home of whoever runs the server, whatever store it reads models from,
    by project: deployments of the same name in two projects keep separate logs."""
    return deployment_log(store.settings.home, "predictions", store.settings.project, label)


def feedback_folder(store: StoreView, label: str) -> Path:
    """Where the labels sent to `POST /feedback` go, beside the prediction log."""
    return deployment_log(store.settings.home, "feedback", store.settings.project, label)


def run(
    store: StoreView,
    source: Source,
    options: ServeOptions,
    announce: Callable[[str], None] = print,
) -> None:
    """Serve until interrupted (Ctrl-C stops cleanly)."""
    import uvicorn

    server, _ = build(store, source, options, announce)
    config = uvicorn.Config(
        server,
        host=options.host,
        port=options.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    runner = uvicorn.Server(config)
    announce(f"listening on http://{options.host}:{options.port}")
    try:
        runner.run()
    except SystemExit:  # uvicorn exits when startup fails; say why in treadle's words
        pass
    if not runner.started:
        from treadle.errors import StoreUnavailableError

        raise StoreUnavailableError(
            f"the model server for {source.label} did not start",
            "see the message above (a missing model or version, or the port in use)",
        )
