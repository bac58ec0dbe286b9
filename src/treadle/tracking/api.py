"""The tracking API: `log_param`, `log_metric`, `log_artifact` and `start_run`.

Inside a step they write to the step's run; in a plain script, open a run first with
`with treadle.start_run(experiment="..."):`.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from treadle.config import Settings, load_settings
from treadle.dsl import format_param
from treadle.errors import InvalidInputError, TreadleError
from treadle.store import Store, materializers, open_store
from treadle.store.records import ArtifactRecord, LineageEdge, RunRecord, new_id
from treadle.tracking.context import ActiveRun, activate, active, as_metric_value, deactivate
from treadle.tracking.heartbeat import Heartbeat
from treadle.tracking.run import LOGGED, Run
from treadle.types import ArtifactKind, RunState

MAX_KEY = 250


def _require_active(what: str) -> ActiveRun:
    run = active()
    if run is None:
        raise TreadleError(
            f"{what} needs an active run",
            "call it inside a @step, or open a run with `with treadle.start_run():`",
        )
    return run


def _check_key(key: Any, what: str) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY:
        raise InvalidInputError(
            f"{what} key must be a non-empty string of at most {MAX_KEY} characters, got {key!r}"
        )
    return key


def log_metric(key: str, value: float, step: int | None = None) -> None:
    """Record one value of a metric. `step` defaults to one more than the last for `key`."""
    run = _require_active("log_metric")
    if step is not None and (not isinstance(step, int) or isinstance(step, bool)):
        raise InvalidInputError(f"metric {key!r} step must be an int, got {step!r}")
    run.metrics.add(_check_key(key, "metric"), as_metric_value(key, value), step)


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    for key, value in metrics.items():
        log_metric(key, value, step)


def log_param(key: str, value: Any) -> None:
    """Record a parameter of the active run. A param, once logged, does not change."""
    log_params({key: value})


def log_params(params: Mapping[str, Any]) -> None:
    run = _require_active("log_param")
    run.store.tracking.log_params(
        run.run_id,
        {_check_key(k, "param"): format_param(v) for k, v in params.items()},
        run.step_run_id,
    )


def log_artifact(value: Any, name: str | None = None, *, kind: str | None = None) -> str:
    """Save a value or a file (pass a `pathlib.Path`) as an artifact of the active run,
    produced by the current step. Returns the artifact id."""
    run = _require_active("log_artifact")
    if isinstance(value, str):
        value = Path(value)
    if name is None:
        name = value.name if isinstance(value, Path) else "artifact"
    try:
        kind_enum = ArtifactKind(kind) if kind is not None else None
    except ValueError:
        raise InvalidInputError(
            f"unknown artifact kind {kind!r}",
            f"use one of {', '.join(k.value for k in ArtifactKind)}",
        ) from None
    saved = materializers.save(value, run.store.objects, kind=kind_enum)
    record = ArtifactRecord(
        id=new_id(),
        project_id=run.project_id,
        name=_check_key(name, "artifact"),
        kind=saved.kind.value,
        materializer=saved.materializer,
        python_type=saved.python_type,
        sha256=saved.sha256,
        uri=run.store.objects.uri(saved.sha256),
        size=saved.size,
        created_at=time.time(),
        run_id=run.run_id,
        producer_step_run_id=run.step_run_id,
    )
    edges = (
        [LineageEdge(record.id, run.step_run_id, "output", f"{LOGGED}{name}")]
        if run.step_run_id
        else []
    )
    run.store.artifacts.add_artifact(record, edges)
    return record.id


def active_run_id() -> str | None:
    run = active()
    return run.run_id if run else None


@contextmanager
def start_run(
    experiment: str | None = None,
    name: str | None = None,
    *,
    params: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
) -> Iterator[Run]:
    """Open a run for a plain script: logs inside the block go to it; it ends SUCCEEDED,
    or FAILED with the traceback if the block raises."""
    settings = settings or load_settings()
    store: Store = open_store(settings)
    project = store.projects.ensure_project(settings.project, settings.user)
    exp = store.projects.ensure_experiment(
        project.id, experiment or settings.experiment, settings.user
    )
    now = time.time()
    record = RunRecord(
        id=new_id(),
        project_id=project.id,
        experiment_id=exp.id,
        pipeline_version_id=None,
        name=name or f"run-{time.strftime('%Y%m%d-%H%M%S')}",
        state=RunState.RUNNING,
        created_by=settings.user,
        executor="script",
        attempt=1,
        created_at=now,
        started_at=now,
        heartbeat_at=now,
    )
    store.runs.create_run(record)
    ctx = ActiveRun.open(store, record.id, project.id)
    token = activate(ctx)
    handle = Run(store, record)
    try:
        with Heartbeat(store, record.id):
            if params:
                log_params(params)
            yield handle
    except BaseException as exc:
        ctx.metrics.flush()
        state = RunState.CANCELLED if isinstance(exc, KeyboardInterrupt) else RunState.FAILED
        store.runs.set_run_state(
            record.id, state, at=time.time(), error="".join(traceback.format_exception(exc))
        )
        raise
    else:
        ctx.metrics.flush()
        store.runs.set_run_state(record.id, RunState.SUCCEEDED, at=time.time())
    finally:
        deactivate(token)
        handle.refresh()
