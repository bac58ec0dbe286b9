"""Monitors of deployments, their windows and alerts."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from treadle.monitoring.monitor import new_monitor
from treadle.server.auth import Access, need, store_of
from treadle.store.records import AlertRecord, MonitorRecord, MonitorWindowRecord

router = APIRouter(prefix="/projects/{project}", tags=["monitoring"])


class MonitorIn(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][\w.-]*$")
    deployment: str = Field(min_length=1, max_length=200)
    window_kind: Literal["rows", "seconds"] = "rows"
    window_size: int = Field(default=1000, ge=1, le=10_000_000)
    thresholds: dict[str, float | str] = Field(default_factory=dict, max_length=20)
    """Drift thresholds (ks, wasserstein, psi, js, alpha, share, method_numeric,
    method_categorical) and label_wait (seconds a window waits for late labels)."""
    rules: list[Annotated[str, Field(max_length=300)]] = Field(default_factory=list, max_length=50)
    """Alert rules, e.g. `drift: drift_share > 0.3 for 2 windows`."""


@router.get("/monitors", response_model=list[MonitorRecord])
def list_monitors(
    request: Request, access: Access = Depends(need("viewer"))
) -> list[MonitorRecord]:
    return store_of(request).monitoring.list_monitors(access.project.id)


@router.post("/monitors", response_model=MonitorRecord, status_code=201)
def create_monitor(
    body: MonitorIn, request: Request, access: Access = Depends(need("editor"))
) -> MonitorRecord:
    """Watch a deployment's predictions in windows (by count or by time) against the
    reference profile of the model version that served them; alert rules become events
    that triggers act on."""
    store = store_of(request)
    store.deployments.get_deployment(access.project.id, body.deployment)  # 404 if missing
    monitor = store.monitoring.create_monitor(
        new_monitor(
            project_id=access.project.id,
            name=body.name,
            deployment=body.deployment,
            window_kind=body.window_kind,
            window_size=body.window_size,
            thresholds=body.thresholds,
            rules=body.rules,
            user=access.user,
        )
    )
    store.audit.record(
        access.project.id,
        access.user,
        "create-monitor",
        "monitor",
        monitor.id,
        {"name": body.name, "deployment": body.deployment, "rules": body.rules},
    )
    return monitor


@router.get("/monitors/{name}", response_model=MonitorRecord)
def get_monitor(
    name: str, request: Request, access: Access = Depends(need("viewer"))
) -> MonitorRecord:
    return store_of(request).monitoring.get_monitor(access.project.id, name)


@router.delete("/monitors/{name}", status_code=204)
def delete_monitor(
    name: str, request: Request, access: Access = Depends(need("editor"))
) -> Response:
    store = store_of(request)
    monitor = store.monitoring.get_monitor(access.project.id, name)
    store.monitoring.delete_monitor(monitor.id)
    store.audit.record(
        access.project.id, access.user, "delete-monitor", "monitor", monitor.id, {"name": name}
    )
    return Response(status_code=204)


@router.get("/monitors/{name}/windows", response_model=list[MonitorWindowRecord])
def monitor_windows(
    name: str,
    request: Request,
    access: Access = Depends(need("viewer")),
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[MonitorWindowRecord]:
    """The monitor's windows, newest first, each with its drift, performance and health."""
    store = store_of(request)
    monitor = store.monitoring.get_monitor(access.project.id, name)
    return store.monitoring.list_windows(monitor.id, limit)


@router.get("/alerts", response_model=list[AlertRecord])
def list_alerts(
    request: Request,
    access: Access = Depends(need("viewer")),
    monitor: Annotated[str | None, Query(max_length=100)] = None,
    state: Literal["firing", "resolved"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AlertRecord]:
    """Alerts, newest first: of one monitor, and firing or resolved, if asked."""
    store = store_of(request)
    monitor_id = store.monitoring.get_monitor(access.project.id, monitor).id if monitor else None
    return store.monitoring.list_alerts(access.project.id, monitor_id, state, limit)
