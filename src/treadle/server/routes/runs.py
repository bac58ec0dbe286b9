"""Experiments, runs, step runs, params, metrics and logs of a project."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from treadle.engine import RunOptions
from treadle.errors import ConflictError, NotFoundError
from treadle.server.acting import acting_store
from treadle.server.auth import Access, need, store_of
from treadle.server.runpool import RunPool
from treadle.store.records import (
    ExperimentRecord,
    ExperimentSummary,
    MetricRecord,
    RunRecord,
    StepRunRecord,
)
from treadle.types import RunState

router = APIRouter(prefix="/projects/{project}", tags=["runs"])


@router.get("/experiments", response_model=list[ExperimentSummary])
def list_experiments(
    request: Request, access: Access = Depends(need("viewer"))
) -> list[ExperimentSummary]:
    return store_of(request).projects.list_experiments(access.project.id)


@router.get("/experiments/{name}", response_model=ExperimentRecord)
def get_experiment(
    name: str, request: Request, access: Access = Depends(need("viewer"))
) -> ExperimentRecord:
    """An experiment by name."""
    return store_of(request).projects.find_experiment(access.project.id, name)


@router.get("/runs", response_model=list[RunRecord])
def list_runs(
    request: Request,
    access: Access = Depends(need("viewer")),
    experiment: str | None = None,
    state: RunState | None = None,
    pipeline_version: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> list[RunRecord]:
    """Runs, newest first; filter by experiment name, state and pipeline version id, page
    with limit/offset."""
    store = store_of(request)
    experiment_id = (
        store.projects.find_experiment(access.project.id, experiment).id if experiment else None
    )
    return store.runs.list_runs(
        access.project.id,
        experiment_id=experiment_id,
        state=state,
        pipeline_version_id=pipeline_version,
        limit=limit,
        offset=offset,
    )


@router.get("/runs/{run_id}", response_model=RunRecord)
def get_run(run_id: str, request: Request, access: Access = Depends(need("viewer"))) -> RunRecord:
    """A run by id or unique prefix."""
    return store_of(request).runs.get_run(run_id, access.project.id)


@router.get("/runs/{run_id}/steps", response_model=list[StepRunRecord])
def list_steps(
    run_id: str, request: Request, access: Access = Depends(need("viewer"))
) -> list[StepRunRecord]:
    store = store_of(request)
    return store.runs.list_steps(store.runs.get_run(run_id, access.project.id).id)


@router.get("/runs/{run_id}/params", response_model=dict[str, str])
def get_params(
    run_id: str, request: Request, access: Access = Depends(need("viewer"))
) -> dict[str, str]:
    store = store_of(request)
    return store.tracking.get_params(store.runs.get_run(run_id, access.project.id).id)


@router.get("/runs/{run_id}/metrics", response_model=list[MetricRecord])
def metric_history(
    run_id: str, request: Request, key: str | None = None, access: Access = Depends(need("viewer"))
) -> list[MetricRecord]:
    """Every logged value, by key and step (one key with `?key=`)."""
    store = store_of(request)
    return store.tracking.metric_history(store.runs.get_run(run_id, access.project.id).id, key)


@router.get("/runs/{run_id}/metrics/latest", response_model=dict[str, float])
def latest_metrics(
    run_id: str, request: Request, access: Access = Depends(need("viewer"))
) -> dict[str, float]:
    """Each metric's value at its highest step."""
    store = store_of(request)
    return store.tracking.latest_metrics(store.runs.get_run(run_id, access.project.id).id)


class MetricIn(BaseModel):
    key: str = Field(min_length=1, max_length=250)
    value: float
    step: int = Field(ge=0, le=2**62)
    timestamp: float | None = None


class MetricsIn(BaseModel):
    metrics: list[MetricIn] = Field(max_length=100_000)


class Logged(BaseModel):
    stored: int


@router.post("/runs/{run_id}/metrics", response_model=Logged)
def log_metrics(
    run_id: str, body: MetricsIn, request: Request, access: Access = Depends(need("editor"))
) -> Logged:
    """Store a batch of metric values for a run."""
    store = store_of(request)
    run = store.runs.get_run(run_id, access.project.id)
    now = time.time()
    store.tracking.log_metrics(
        [MetricRecord(run.id, m.key, m.value, m.step, m.timestamp or now) for m in body.metrics]
    )
    return Logged(stored=len(body.metrics))


@router.get("/runs/{run_id}/logs", response_class=PlainTextResponse)
def logs(
    run_id: str, request: Request, step: str | None = None, access: Access = Depends(need("viewer"))
) -> str:
    """What the run's steps printed, and their tracebacks, as text."""
    store = store_of(request)
    run = store.runs.get_run(run_id, access.project.id)
    steps = store.runs.list_steps(run.id)
    if step is not None:
        steps = [s for s in steps if step in (s.node, s.step_name)]
        if not steps:
            raise NotFoundError(f"run {run.id[:8]} has no step {step!r}")
    parts = []
    for s in steps:
        parts.append(f"== {s.node} (attempt {s.attempt}) {s.state.value}\n")
        uri = s.log_uri or (store.runs.get_step(s.cached_from).log_uri if s.cached_from else None)
        if uri:
            parts.append(
                store.objects.get_bytes(store.objects.sha_of(uri)).decode(errors="replace")
            )
        if s.error:
            parts.append(s.error)
    return "".join(parts)


class SubmitRun(BaseModel):
    pipeline: str = Field(min_length=1, max_length=200)
    """The name of a pipeline that has run in the project; its newest version runs."""
    params: dict[str, str] = Field(default_factory=dict, max_length=200)
    """Parameters as `treadle run -p` takes them: strings parsed by the pipeline's types."""
    experiment: str | None = Field(default=None, min_length=1, max_length=200)
    name: str | None = Field(default=None, min_length=1, max_length=200)
    version: str | None = Field(default=None, min_length=1, max_length=64)
    """A version id of the pipeline to run instead of its newest."""
    executor: Literal["local", "process", "ray"] | None = None
    """Where the steps run on the server: threads (local), worker processes, or Ray;
    by default what the version's package asks for, else the server's own."""
    workers: int | None = Field(default=None, ge=1, le=64)
    """How many steps may run at once."""
    use_cache: bool = True
    """False runs every step even if its result is cached."""


def _pool(request: Request) -> RunPool:
    pool: RunPool | None = getattr(request.app.state, "runs", None)
    if pool is None:
        raise ConflictError("this server does not execute runs", "submit to `treadle up`")
    return pool


@router.post("/runs", response_model=RunRecord, status_code=202)
def submit_run(
    body: SubmitRun, request: Request, access: Access = Depends(need("editor"))
) -> RunRecord:
    """Run the newest version of a pipeline on the server. The run is recorded at once
    (bad parameters are refused and nothing is written) and executes in the background."""
    store = acting_store(store_of(request), access)
    options = RunOptions(
        experiment=body.experiment,
        name=body.name,
        executor=body.executor,
        max_workers=body.workers,
        use_cache=body.use_cache,
    )
    run = _pool(request).submit(store, body.pipeline, body.params, options, body.version)
    store.audit.record(
        access.project.id,
        access.user,
        "submit-run",
        "run",
        run.id,
        {"pipeline": body.pipeline, "params": body.params},
    )
    return run


@router.post("/runs/{run_id}/cancel", response_model=RunRecord)
def cancel_run(
    run_id: str, request: Request, access: Access = Depends(need("editor"))
) -> RunRecord:
    """Stop a run the server is executing; it ends CANCELLED with its finished steps kept."""
    store = store_of(request)
    run = store.runs.get_run(run_id, access.project.id)
    if not _pool(request).cancel(run):
        raise ConflictError(
            f"run {run.id[:8]} is not executing on this server", f"it is {run.state.value}"
        )
    store.audit.record(access.project.id, access.user, "cancel-run", "run", run.id)
    return run


@router.post("/runs/{run_id}/resume", response_model=RunRecord, status_code=202)
def resume(run_id: str, request: Request, access: Access = Depends(need("editor"))) -> RunRecord:
    """Run again what a FAILED or CANCELLED run did not finish, on the server."""
    store = acting_store(store_of(request), access)
    run = _pool(request).resume(store, store.runs.get_run(run_id, access.project.id))
    store.audit.record(access.project.id, access.user, "resume-run", "run", run.id)
    return run
