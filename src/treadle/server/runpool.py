"""Runs submitted through the API, executed by the control plane.

A submission is checked and recorded at once (bad parameters are a 4xx and write
nothing); the run then executes on a small pool of threads in `treadle up`, beating its
heartbeat like any run. It can be cancelled (it ends CANCELLED, finished steps kept) and
resumed like any other.
"""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from treadle.engine import RunOptions, resume_run, version_pipeline
from treadle.engine.runner import execute_planned, plan_run
from treadle.errors import ConflictError, NotFoundError
from treadle.packaging import parse_source, read_package
from treadle.store import Store
from treadle.store.records import RunRecord

WORKERS = 2


_package_executors: dict[str, str | None] = {}


def packaged_executor(store: Store, source: str) -> str | None:
    """The executor a deployed package asks for (`treadle pipeline build --executor`)."""
    located = parse_source(source)
    if located is None:
        return None
    sha = located[0]
    if sha not in _package_executors:  # a package never changes: read it once
        package = read_package(store.objects.get_bytes(sha))
        _package_executors[sha] = package.manifest.executor
    return _package_executors[sha]


class RunPool:
    def __init__(self, workers: int = WORKERS) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="treadle-run")
        self._cancels: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def _event(self, run_id: str) -> threading.Event:
        with self._lock:
            return self._cancels.setdefault(run_id, threading.Event())

    def _done(self, run_id: str) -> None:
        with self._lock:
            self._cancels.pop(run_id, None)

    def submit(
        self,
        store: Store,
        pipeline: str,
        params: dict[str, str],
        options: RunOptions = RunOptions(),
        version_id: str | None = None,
    ) -> RunRecord:
        """Record a run of `pipeline` (its newest version, or the one given) and queue it."""
        project = store.projects.get_project(store.settings.project)
        if version_id is None:
            _, version = store.pipelines.latest_version(project.id, pipeline)
        else:
            owner, version = store.pipelines.get_version(version_id)
            if owner.project_id != project.id or owner.name != pipeline:
                raise NotFoundError(f"pipeline {pipeline!r} has no version {version_id!r}")
        found, source = version_pipeline(store, version)
        typed = found.parse_params(params)
        cancel = threading.Event()
        executor = options.executor or packaged_executor(store, version.source)
        options = dataclasses.replace(options, cancel=cancel, executor=executor)
        pinned = version if parse_source(version.source) else None
        planned = plan_run(found, typed, store, options, source, version=pinned)
        with self._lock:
            self._cancels[planned.run.id] = cancel
        self._pool.submit(self._execute, store, planned, options)
        return planned.run

    def launch(
        self,
        store: Store,
        project_id: str,
        pipeline: str,
        params: dict[str, str],
        cause: dict[str, Any],
        user: str,
    ) -> RunRecord:
        """Start a run of `pipeline`'s current version for a schedule or a trigger, as
        the user who made it, recording why it ran."""
        projects = {p.id: p for p in store.projects.list_projects()}
        if project_id not in projects:
            raise NotFoundError(f"no project with id {project_id!r}")
        acting = dataclasses.replace(
            store, settings=store.settings.replace(project=projects[project_id].name, user=user)
        )
        return self.submit(acting, pipeline, params, RunOptions(cause=cause))

    def _execute(self, store: Store, planned: Any, options: RunOptions) -> None:
        try:
            execute_planned(store, planned, options)
        finally:
            self._done(planned.run.id)

    def resume(self, store: Store, run: RunRecord) -> RunRecord:
        if not run.state.resumable:
            raise ConflictError(
                f"run {run.id[:8]} is {run.state.value}; only FAILED or CANCELLED runs resume"
            )
        options = RunOptions(cancel=self._event(run.id))
        self._pool.submit(self._resume, store, run.id, options)
        return run

    def _resume(self, store: Store, run_id: str, options: RunOptions) -> None:
        try:
            resume_run(run_id, store, options)
        finally:
            self._done(run_id)

    def cancel(self, run: RunRecord) -> bool:
        """Ask a run executing here to stop; False if it is not running here."""
        with self._lock:
            event = self._cancels.get(run.id)
        if event is None:
            return False
        event.set()
        return True

    def shutdown(self) -> None:
        with self._lock:
            events = list(self._cancels.values())
        for event in events:
            event.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
