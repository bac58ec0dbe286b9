"""Home: the project's loop at a glance — latest runs, models and their aliases,
deployments with their traffic and health, open alerts, and the next scheduled runs."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from treadle.automation.cron import next_due
from treadle.errors import TreadleError
from treadle.server.dashboard.seat import Seat, seat, show
from treadle.store.records import DeploymentRecord, MonitorRecord

router = APIRouter()


def deployment_health(
    where: Seat, deployment: DeploymentRecord, monitors: list[MonitorRecord]
) -> dict[str, Any]:
    """The deployment's current revision, and what its monitors last said."""
    store = where.store
    revision = store.deployments.current_revision(deployment.id)
    watching = [m for m in monitors if m.deployment == deployment.name]
    states = [m.state for m in watching]
    health = (
        "alerting"
        if "alerting" in states
        else "error"
        if "error" in states
        else "ok"
        if "ok" in states
        else (states[0] if states else "unmonitored")
    )
    return {"deployment": deployment, "revision": revision, "monitors": watching, "health": health}


def next_fires(where: Seat, limit: int = 10) -> list[dict[str, Any]]:
    """Active schedules, the one due soonest first."""
    now = time.time()
    out: list[tuple[float, dict[str, Any]]] = []
    for schedule in where.store.automation.list_schedules(where.project_id):
        if schedule.paused:
            continue
        try:
            due: float | None = next_due(schedule.cron, schedule.timezone, now)
        except TreadleError:
            due = None
        out.append((due if due is not None else float("inf"), {"schedule": schedule, "due": due}))
    out.sort(key=lambda item: item[0])
    return [item for _, item in out[:limit]]


@router.get("/p/{project}/", response_class=HTMLResponse)
def home(request: Request, where: Seat = Depends(seat)) -> HTMLResponse:
    store = where.store
    pid = where.project_id
    models = []
    for model in store.models.list_models(pid)[:50]:
        models.append(
            {
                "model": model,
                "aliases": store.models.list_aliases(model.id),
                "versions": len(store.models.list_versions(model.id)),
            }
        )
    runs = store.runs.list_runs(pid, limit=10)
    monitors = store.monitoring.list_monitors(pid)
    deployments = [
        deployment_health(where, d, monitors) for d in store.deployments.list_deployments(pid)
    ]
    return show(
        request,
        where,
        "home.html",
        runs=runs,
        experiments={
            e: store.projects.get_experiment(e).name for e in {r.experiment_id for r in runs}
        },
        models=models,
        deployments=deployments,
        alerts=store.monitoring.list_alerts(pid, state="firing", limit=20),
        monitor_names={m.id: m.name for m in monitors},
        schedules=next_fires(where),
    )
