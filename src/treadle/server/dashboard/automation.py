"""Pipelines and their versions, schedules (pause and resume), triggers (enable and
disable) with their recent fires, and the project's events."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from treadle.automation.cron import next_due
from treadle.errors import TreadleError
from treadle.server.dashboard.seat import Seat, acting, back, seat, show
from treadle.server.routes import automation as automation_api

router = APIRouter()
FIRES = 5


@router.get("/p/{project}/pipelines", response_class=HTMLResponse)
def pipelines_page(request: Request, where: Seat = Depends(seat)) -> HTMLResponse:
    store = where.store
    pid = where.project_id
    pipelines = []
    for pipeline in store.pipelines.list_pipelines(pid):
        versions = list(reversed(store.pipelines.list_versions(pid, pipeline.name)))
        current = pipeline.current_version_id or (versions[0].id if versions else None)
        pipelines.append({"pipeline": pipeline, "versions": versions, "current": current})
    now = time.time()
    schedules: list[dict[str, Any]] = []
    for schedule in store.automation.list_schedules(pid):
        try:
            due: float | None = (
                None if schedule.paused else next_due(schedule.cron, schedule.timezone, now)
            )
        except TreadleError:
            due = None
        fires = store.automation.list_fires(schedule.id, limit=FIRES)
        schedules.append({"schedule": schedule, "due": due, "fires": fires})
    triggers = [
        {"trigger": t, "fires": store.automation.list_trigger_fires(t.id, limit=FIRES)}
        for t in store.automation.list_triggers(pid)
    ]
    return show(
        request,
        where,
        "pipelines.html",
        pipelines=pipelines,
        schedules=schedules,
        triggers=triggers,
        events=store.automation.list_events(pid, limit=30),
    )


def _page(where: Seat, anchor: str) -> str:
    return where.url("pipelines") + anchor


@router.post("/p/{project}/schedules/{name}/pause")
def pause(
    project: str, name: str, request: Request, csrf: str = Form(max_length=100)
) -> RedirectResponse:
    where = acting(project, request, csrf)
    try:
        automation_api.pause_schedule(name, request, where.access)
    except TreadleError as exc:
        return back(where, _page(where, "#schedules"), "error", exc.message)
    return back(where, _page(where, "#schedules"), "ok", f"schedule {name} is paused")


@router.post("/p/{project}/schedules/{name}/resume")
def resume(
    project: str, name: str, request: Request, csrf: str = Form(max_length=100)
) -> RedirectResponse:
    where = acting(project, request, csrf)
    try:
        automation_api.resume_schedule(name, request, where.access)
    except TreadleError as exc:
        return back(where, _page(where, "#schedules"), "error", exc.message)
    return back(where, _page(where, "#schedules"), "ok", f"schedule {name} fires again from now on")


@router.post("/p/{project}/triggers/{name}/enabled")
def set_enabled(
    project: str,
    name: str,
    request: Request,
    csrf: str = Form(max_length=100),
    enabled: bool = Form(),
) -> RedirectResponse:
    where = acting(project, request, csrf)
    try:
        automation_api.set_trigger_enabled(
            name, automation_api.EnabledIn(enabled=enabled), request, where.access
        )
    except TreadleError as exc:
        return back(where, _page(where, "#triggers"), "error", exc.message)
    word = "enabled" if enabled else "disabled"
    return back(where, _page(where, "#triggers"), "ok", f"trigger {name} is {word}")
