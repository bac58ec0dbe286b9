"""Runs: the filterable list, a run's page (its graph, params, metric charts, step logs,
artifacts, why it ran), an artifact's lineage, and 2 to 5 runs side by side."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from treadle.errors import InvalidInputError, NotFoundError
from treadle.server.dashboard import charts
from treadle.server.dashboard.dag import layout
from treadle.server.dashboard.seat import Seat, seat, show
from treadle.server.routes import automation as automation_api
from treadle.server.routes import runs as runs_api
from treadle.store.records import ModelVersionRecord, RunRecord
from treadle.types import RunState

router = APIRouter()

PAGE = 50
SCAN = 1000
"""Filters the store cannot apply (trigger, time, a pipeline of several versions) look at
this many runs per page at most, newest first."""
SINCE = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
CAUSES = (
    "manual",
    "schedule",
    "webhook",
    "run.finished",
    "model.registered",
    "artifact.created",
    "monitor.alert",
)
LOG_LIMIT = 100_000


def pipeline_names(where: Seat) -> dict[str, tuple[str, str]]:
    """Pipeline version id -> (pipeline name, version hash)."""
    out = {}
    for pipeline in where.store.pipelines.list_pipelines(where.project_id):
        for version in where.store.pipelines.list_versions(where.project_id, pipeline.name):
            out[version.id] = (pipeline.name, version.hash)
    return out


NAMES_TTL = 30.0
"""How long the experiment picker's list may be stale: listing experiments counts every
run of each, which with 100,000 runs takes longer than the page itself."""


def experiment_names(request: Request, where: Seat, ids: set[str]) -> dict[str, str]:
    """Experiment id -> name: every experiment of the project (at most NAMES_TTL seconds
    old), and surely those in `ids`."""
    cache: dict[str, tuple[float, dict[str, str]]] = request.app.state.experiment_names
    now = time.monotonic()
    at, names = cache.get(where.project_id, (0.0, {}))
    if now - at > NAMES_TTL:
        summaries = where.store.projects.list_experiments(where.project_id)
        names = {e.experiment.id: e.experiment.name for e in summaries}
        cache[where.project_id] = (now, names)
    missing = ids - names.keys()
    if missing:
        names = {**names}
        for experiment_id in missing:
            names[experiment_id] = where.store.projects.get_experiment(experiment_id).name
    return names


def _filtered(
    where: Seat,
    *,
    experiment_id: str | None,
    state: RunState | None,
    version: str | None,
    versions_of_pipeline: set[str] | None,
    cause: str | None,
    since: float | None,
    offset: int,
) -> tuple[list[RunRecord], int | None]:
    """A page of runs and the offset of the next one (None: no more)."""
    runs = where.store.runs
    local = versions_of_pipeline is not None or cause is not None or since is not None
    if not local:
        rows = runs.list_runs(
            where.project_id,
            experiment_id=experiment_id,
            state=state,
            pipeline_version_id=version,
            limit=PAGE + 1,
            offset=offset,
        )
        return rows[:PAGE], offset + PAGE if len(rows) > PAGE else None
    rows = runs.list_runs(
        where.project_id,
        experiment_id=experiment_id,
        state=state,
        pipeline_version_id=version,
        limit=SCAN,
        offset=offset,
    )
    shown: list[RunRecord] = []
    consumed = 0
    for run in rows:
        if since is not None and run.created_at < since:
            return shown, None  # newest first: nothing older can match
        consumed += 1
        if versions_of_pipeline is not None and run.pipeline_version_id not in versions_of_pipeline:
            continue
        if cause is not None and (run.cause or {}).get("kind", "manual") != cause:
            continue
        shown.append(run)
        if len(shown) == PAGE:
            break
    more = consumed < len(rows) or len(rows) == SCAN
    return shown, offset + consumed if more else None


@router.get("/p/{project}/runs", response_class=HTMLResponse)
def run_list(
    request: Request,
    where: Seat = Depends(seat),
    experiment: Annotated[str, Query(max_length=200)] = "",
    state: Annotated[str, Query(max_length=20)] = "",
    pipeline: Annotated[str, Query(max_length=200)] = "",
    version: Annotated[str, Query(max_length=64)] = "",
    cause: Annotated[str, Query(max_length=40)] = "",
    since: Annotated[str, Query(max_length=10)] = "",
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> HTMLResponse:
    store = where.store
    experiments = experiment_names(request, where, set())
    versions = pipeline_names(where)
    experiment_id = None
    if experiment:
        experiment_id = store.projects.find_experiment(where.project_id, experiment).id
    try:
        run_state = RunState(state) if state else None
    except ValueError:
        raise InvalidInputError(f"no run state {state!r}") from None
    if since and since not in SINCE:
        raise InvalidInputError(f"since: use one of {', '.join(SINCE)}")
    asked = {
        "experiment": experiment,
        "state": state,
        "pipeline": pipeline,
        "version": version,
        "cause": cause,
        "since": since,
    }
    of_pipeline: set[str] | None = None
    if pipeline and not version:
        of_pipeline = {v for v, (name, _) in versions.items() if name == pipeline}
        if len(of_pipeline) == 1:
            version, of_pipeline = next(iter(of_pipeline)), None
        elif not of_pipeline:
            raise NotFoundError(f"no pipeline {pipeline!r} in {where.project}")
    shown, next_offset = _filtered(
        where,
        experiment_id=experiment_id,
        state=run_state,
        version=version or None,
        versions_of_pipeline=of_pipeline,
        cause=cause or None,
        since=time.time() - SINCE[since] if since else None,
        offset=offset,
    )
    experiments = experiment_names(request, where, {r.experiment_id for r in shown})
    return show(
        request,
        where,
        "runs.html",
        runs=shown,
        next_offset=next_offset,
        offset=offset,
        values={k: v for k, v in asked.items() if v},
        experiments=experiments,
        versions=versions,
        pipelines=sorted({name for name, _ in versions.values()}),
        states=[s.value for s in RunState],
        causes=CAUSES,
        sinces=list(SINCE),
        chosen=asked,
    )


def _versions_from(where: Seat, run_id: str) -> list[tuple[str, ModelVersionRecord]]:
    out = []
    for model in where.store.models.list_models(where.project_id):
        for version in where.store.models.list_versions(model.id):
            if version.run_id == run_id:
                out.append((model.name, version))
    return out


def _metric_charts(where: Seat, run_ids: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """A chart per metric logged over several steps, a line per run ((label, run id)
    pairs); metrics with one value each go together into one bar chart."""
    series: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    for label, run_id in run_ids:
        for metric in where.store.tracking.metric_history(run_id):
            xs, ys = series.setdefault(metric.key, {}).setdefault(label, ([], []))
            xs.append(metric.step)
            ys.append(metric.value)
    over_steps = {k: v for k, v in series.items() if any(len(xs) > 1 for xs, _ in v.values())}
    once = sorted(k for k in series if k not in over_steps)
    out = [
        {"key": key, "figure": charts.lines(key, lines, "step", key)}
        for key, lines in sorted(over_steps.items())
    ]
    if once:
        bars = {
            label: [series[k][label][1][-1] if label in series[k] else None for k in once]
            for label, _ in run_ids
        }
        out.append({"key": "", "figure": charts.grouped_bars("final values", once, bars)})
    return out


@router.get("/p/{project}/runs/{run_id}", response_class=HTMLResponse)
def run_page(run_id: str, request: Request, where: Seat = Depends(seat)) -> HTMLResponse:
    store = where.store
    run = store.runs.get_run(run_id, where.project_id)
    steps = store.runs.list_steps(run.id)
    pipeline = None
    drawing = None
    if run.pipeline_version_id:
        record, version = store.pipelines.get_version(run.pipeline_version_id)
        pipeline = {"name": record.name, "version": version}
        drawing = layout(version.spec, steps)
    why = automation_api.why(run.id, request, where.access)
    logs: list[dict[str, Any]] = []
    for node in dict.fromkeys(s.node for s in steps):
        text = runs_api.logs(run.id, request, step=node, access=where.access)
        clipped = len(text) > LOG_LIMIT
        said = text.count("\n") > 1  # more than the step's header line
        opened = said and not any(log["open"] for log in logs)
        logs.append({"node": node, "text": text[-LOG_LIMIT:], "clipped": clipped, "open": opened})
    return show(
        request,
        where,
        "run.html",
        charts=True,
        run=run,
        experiment=store.projects.get_experiment(run.experiment_id).name,
        pipeline=pipeline,
        drawing=drawing,
        steps=steps,
        params=store.tracking.get_params(run.id),
        latest=store.tracking.latest_metrics(run.id),
        metric_charts=_metric_charts(where, [(run.name, run.id)]),
        logs=logs,
        outputs=store.artifacts.run_artifacts(run.id),
        why=why,
        registered=_versions_from(where, run.id),
    )


@router.get("/p/{project}/artifacts/{artifact_id}", response_class=HTMLResponse)
def artifact_page(artifact_id: str, request: Request, where: Seat = Depends(seat)) -> HTMLResponse:
    store = where.store
    artifact = store.artifacts.get_artifact(artifact_id, where.project_id)
    lineage = store.artifacts.lineage(artifact.id)
    run_names = {}
    for entry in (*lineage.produced_by, *lineage.consumed_by):
        if entry.step_run.run_id not in run_names:
            run_names[entry.step_run.run_id] = store.runs.get_run(entry.step_run.run_id).name
    preview = None
    if artifact.materializer == "json" and artifact.size <= 65536:
        preview = store.objects.get_bytes(artifact.sha256).decode(errors="replace")
    registered = _versions_from(where, artifact.run_id) if artifact.run_id else []
    return show(
        request,
        where,
        "artifact.html",
        artifact=artifact,
        lineage=lineage,
        run_names=run_names,
        preview=preview,
        registered=registered,
    )


@router.get("/p/{project}/compare", response_class=HTMLResponse)
def compare(
    request: Request,
    where: Seat = Depends(seat),
    run: Annotated[list[str], Query(max_length=5)] = [],  # noqa: B006
) -> HTMLResponse:
    ids = list(dict.fromkeys(run))
    if not 2 <= len(ids) <= 5:
        raise InvalidInputError("compare takes 2 to 5 runs", "tick 2 to 5 runs in the list")
    store = where.store
    runs = [store.runs.get_run(i, where.project_id) for i in ids]
    params = {r.id: store.tracking.get_params(r.id) for r in runs}
    latest = {r.id: store.tracking.latest_metrics(r.id) for r in runs}
    param_keys = sorted({k for p in params.values() for k in p})
    metric_keys = sorted({k for m in latest.values() for k in m})
    labels = [(f"{r.name} ({r.id[:6]})", r.id) for r in runs]
    return show(
        request,
        where,
        "compare.html",
        charts=True,
        runs=runs,
        params=params,
        latest=latest,
        param_keys=param_keys,
        metric_keys=metric_keys,
        differs={k: len({params[r.id].get(k) for r in runs}) > 1 for k in param_keys},
        metric_charts=_metric_charts(where, labels),
    )
