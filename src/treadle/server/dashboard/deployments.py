"""Deployments: revisions and their traffic, request rate, latency and errors from the
windows of the monitors that watch them, the rollout history; roll back (after a
confirmation) and follow the aliases again."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from treadle.errors import InvalidInputError, TreadleError
from treadle.server.dashboard import charts
from treadle.server.dashboard.home import deployment_health
from treadle.server.dashboard.seat import Seat, acting, back, seat, show
from treadle.server.routes import deployments as deployments_api
from treadle.store.records import MonitorWindowRecord

router = APIRouter()
WINDOWS = 200


def health_charts(windows: list[MonitorWindowRecord]) -> list[dict[str, Any]]:
    """Request rate, latency, errors and predictions per version, window by window
    (oldest first; each point's hover says when the window ended)."""
    xs = [w.seq for w in windows]
    ends = [charts.stamp(w.end_ts) for w in windows]

    def series(key: str) -> list[Any]:
        return [(w.stats.get("health") or {}).get(key) for w in windows]

    def line(title: str, named: dict[str, list[Any]], y: str = "") -> dict[str, Any]:
        return charts.lines(title, {k: (xs, v) for k, v in named.items()}, "window", y, hover=ends)

    out = [
        line("requests per second", {"requests/s": series("requests_per_s")}),
        line(
            "latency (ms)",
            {"p50": series("p50_ms"), "p95": series("p95_ms"), "p99": series("p99_ms")},
            "ms",
        ),
    ]
    errors = series("error_rate")
    if any(e is not None for e in errors):
        out.append(line("error rate", {"errors": errors}))
    versions = sorted({v for w in windows for v in (w.stats.get("versions") or {})}, key=int)
    if versions:
        counts = {
            f"v{v}": [(w.stats.get("versions") or {}).get(v, 0) for w in windows] for v in versions
        }
        out.append(line("predictions by version", counts))
    return out


@router.get("/p/{project}/deployments", response_class=HTMLResponse)
def deployment_list(request: Request, where: Seat = Depends(seat)) -> HTMLResponse:
    store = where.store
    monitors = store.monitoring.list_monitors(where.project_id)
    items = [
        deployment_health(where, d, monitors)
        for d in store.deployments.list_deployments(where.project_id)
    ]
    return show(request, where, "deployments.html", deployments=items)


@router.get("/p/{project}/deployments/{name}", response_class=HTMLResponse)
def deployment_page(name: str, request: Request, where: Seat = Depends(seat)) -> HTMLResponse:
    store = where.store
    deployment = store.deployments.get_deployment(where.project_id, name)
    monitors = store.monitoring.list_monitors(where.project_id)
    item = deployment_health(where, deployment, monitors)
    revisions = store.deployments.list_revisions(deployment.id)
    windows: list[MonitorWindowRecord] = []
    for monitor in item["monitors"][:1]:  # the charts of one monitor: windows differ
        windows = list(reversed(store.monitoring.list_windows(monitor.id, limit=WINDOWS)))
    figures = health_charts(windows) if windows else []
    if item["revision"]:
        figures.insert(0, charts.traffic("traffic now", item["revision"].targets))
    return show(
        request,
        where,
        "deployment.html",
        charts=bool(figures),
        item=item,
        deployment=deployment,
        revisions=list(reversed(revisions)),
        figures=figures,
        model=store.models.get_version_by_id,
    )


@router.get("/p/{project}/deployments/{name}/rollback", response_class=HTMLResponse)
def confirm_rollback(name: str, request: Request, where: Seat = Depends(seat)) -> HTMLResponse:
    store = where.store
    deployment = store.deployments.get_deployment(where.project_id, name)
    revisions = store.deployments.list_revisions(deployment.id)
    if len(revisions) < 2:
        raise InvalidInputError(f"{name} has one revision: nothing to roll back to")
    return show(
        request,
        where,
        "confirm_deployment_rollback.html",
        deployment=deployment,
        current=revisions[-1],
        previous=revisions[-2],
    )


@router.post("/p/{project}/deployments/{name}/rollback")
def rollback(
    project: str, name: str, request: Request, csrf: str = Form(max_length=100)
) -> RedirectResponse:
    where = acting(project, request, csrf)
    page = where.url("deployments", name)
    try:
        revision = deployments_api.rollback(name, request, where.access)
    except TreadleError as exc:
        return back(where, page, "error", f"not rolled back: {exc.message}")
    return back(where, page, "ok", f"rolled back: revision {revision.number} is served now")


@router.post("/p/{project}/deployments/{name}/follow")
def follow(
    project: str, name: str, request: Request, csrf: str = Form(max_length=100)
) -> RedirectResponse:
    where = acting(project, request, csrf)
    page = where.url("deployments", name)
    try:
        revision = deployments_api.follow(name, request, where.access)
    except TreadleError as exc:
        return back(where, page, "error", f"not changed: {exc.message}")
    return back(where, page, "ok", f"following its aliases again: revision {revision.number}")
