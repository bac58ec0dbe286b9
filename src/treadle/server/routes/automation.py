"""Schedules, triggers, events, webhooks, and why a run happened."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from treadle.automation.scheduler import CATCHUP, CONCURRENCY, new_schedule
from treadle.automation.triggers import KINDS, Dispatcher, new_trigger, unsigned, verify
from treadle.automation.why import explain
from treadle.errors import ConflictError, InvalidInputError, NotFoundError
from treadle.server.auth import Access, need, store_of
from treadle.store import Store
from treadle.store.records import (
    CreatedTrigger,
    EventRecord,
    Fire,
    ScheduleFireRecord,
    ScheduleRecord,
    TriggerFireRecord,
    TriggerRecord,
    Why,
)

router = APIRouter(prefix="/projects/{project}", tags=["automation"])
hooks = APIRouter(tags=["automation"])

Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][\w.-]*$")]
Params = Annotated[dict[str, Annotated[str, Field(max_length=2000)]], Field(max_length=100)]


class ScheduleIn(BaseModel):
    name: Name
    pipeline: str = Field(min_length=1, max_length=200)
    cron: str = Field(min_length=1, max_length=200, examples=["*/15 * * * *"])
    timezone: str = Field(default="UTC", min_length=1, max_length=64)
    params: Params = Field(default_factory=dict)
    catchup: Literal["skip", "once", "all"] = "skip"
    max_catchup: int = Field(default=10, ge=1, le=1000)
    concurrency: Literal["allow", "forbid", "replace"] = "allow"


class TriggerIn(BaseModel):
    name: Name
    kind: Literal[
        "webhook", "manual", "run.finished", "model.registered", "artifact.created", "monitor.alert"
    ]
    pipeline: str = Field(min_length=1, max_length=200)
    params: Params = Field(default_factory=dict)
    """Literal values, or `$event.FIELD.SUBFIELD` to take one from the event."""
    filter: Params = Field(default_factory=dict)
    """Event payload fields (dotted paths) and the values they must have."""


class EnabledIn(BaseModel):
    enabled: bool


class FireIn(BaseModel):
    payload: dict[str, Any] = Field(default_factory=dict, max_length=200)


assert set(CATCHUP) == {"skip", "once", "all"} and set(CONCURRENCY) == {
    "allow",
    "forbid",
    "replace",
}
assert set(KINDS) == set(TriggerIn.model_fields["kind"].annotation.__args__)  # type: ignore[union-attr]


def _pipeline_exists(store: Store, project_id: str, name: str) -> None:
    try:
        store.pipelines.latest_version(project_id, name)
    except NotFoundError:
        raise NotFoundError(
            f"pipeline: no pipeline named {name!r} in this project",
            "deploy it first: treadle pipeline deploy PACKAGE --to ENV",
        ) from None


# -- schedules ----------------------------------------------------------------------------


@router.get("/schedules", response_model=list[ScheduleRecord])
def list_schedules(
    request: Request, access: Access = Depends(need("viewer"))
) -> list[ScheduleRecord]:
    return store_of(request).automation.list_schedules(access.project.id)


@router.post("/schedules", response_model=ScheduleRecord, status_code=201)
def create_schedule(
    body: ScheduleIn, request: Request, access: Access = Depends(need("editor"))
) -> ScheduleRecord:
    """A cron schedule (with a time zone) that runs the pipeline's current version. Due
    times missed while the platform was down follow `catchup`; a due time that finds the
    last run still going follows `concurrency`."""
    store = store_of(request)
    _pipeline_exists(store, access.project.id, body.pipeline)
    schedule = store.automation.create_schedule(
        new_schedule(
            project_id=access.project.id,
            name=body.name,
            pipeline=body.pipeline,
            cron_expression=body.cron,
            timezone=body.timezone,
            params=body.params,
            catchup=body.catchup,
            max_catchup=body.max_catchup,
            concurrency=body.concurrency,
            user=access.user,
        )
    )
    store.audit.record(
        access.project.id,
        access.user,
        "create-schedule",
        "schedule",
        schedule.id,
        {"name": body.name, "pipeline": body.pipeline, "cron": body.cron, "tz": body.timezone},
    )
    return schedule


@router.get("/schedules/{name}", response_model=ScheduleRecord)
def get_schedule(
    name: str, request: Request, access: Access = Depends(need("viewer"))
) -> ScheduleRecord:
    return store_of(request).automation.get_schedule(access.project.id, name)


def _pause(request: Request, access: Access, name: str, paused: bool) -> ScheduleRecord:
    store = store_of(request)
    schedule = store.automation.get_schedule(access.project.id, name)
    changed = store.automation.set_paused(schedule.id, paused, time.time())
    action = "pause-schedule" if paused else "resume-schedule"
    store.audit.record(access.project.id, access.user, action, "schedule", schedule.id)
    return changed


@router.post("/schedules/{name}/pause", response_model=ScheduleRecord)
def pause_schedule(
    name: str, request: Request, access: Access = Depends(need("editor"))
) -> ScheduleRecord:
    """Stop firing until resumed."""
    return _pause(request, access, name, True)


@router.post("/schedules/{name}/resume", response_model=ScheduleRecord)
def resume_schedule(
    name: str, request: Request, access: Access = Depends(need("editor"))
) -> ScheduleRecord:
    """Fire again from now on; due times that passed while paused are let go."""
    return _pause(request, access, name, False)


@router.delete("/schedules/{name}", status_code=204)
def delete_schedule(
    name: str, request: Request, access: Access = Depends(need("editor"))
) -> Response:
    store = store_of(request)
    schedule = store.automation.get_schedule(access.project.id, name)
    store.automation.delete_schedule(schedule.id)
    store.audit.record(
        access.project.id, access.user, "delete-schedule", "schedule", schedule.id, {"name": name}
    )
    return Response(status_code=204)


@router.get("/schedules/{name}/fires", response_model=list[ScheduleFireRecord])
def schedule_fires(
    name: str,
    request: Request,
    access: Access = Depends(need("viewer")),
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[ScheduleFireRecord]:
    """What each due time did (started a run, or why not), newest first."""
    store = store_of(request)
    schedule = store.automation.get_schedule(access.project.id, name)
    return store.automation.list_fires(schedule.id, limit)


# -- triggers -----------------------------------------------------------------------------


@router.get("/triggers", response_model=list[TriggerRecord])
def list_triggers(
    request: Request, access: Access = Depends(need("viewer"))
) -> list[TriggerRecord]:
    return store_of(request).automation.list_triggers(access.project.id)


@router.post("/triggers", response_model=CreatedTrigger, status_code=201)
def create_trigger(
    body: TriggerIn, request: Request, access: Access = Depends(need("editor"))
) -> CreatedTrigger:
    """A trigger that starts the pipeline's current version on every event of its kind
    (that passes its filter), with parameters taken from the event. A webhook trigger's
    secret is in the answer, once."""
    store = store_of(request)
    _pipeline_exists(store, access.project.id, body.pipeline)
    record, secret = new_trigger(
        project_id=access.project.id,
        name=body.name,
        kind=body.kind,
        pipeline=body.pipeline,
        params=body.params,
        filter=body.filter,
        user=access.user,
    )
    trigger = store.automation.create_trigger(record, secret)
    store.audit.record(
        access.project.id,
        access.user,
        "create-trigger",
        "trigger",
        trigger.id,
        {"name": body.name, "kind": body.kind, "pipeline": body.pipeline},
    )
    hook = f"/api/v1/hooks/{trigger.id}" if body.kind == "webhook" else None
    return CreatedTrigger(trigger, secret, hook)


@router.get("/triggers/{name}", response_model=TriggerRecord)
def get_trigger(
    name: str, request: Request, access: Access = Depends(need("viewer"))
) -> TriggerRecord:
    return store_of(request).automation.get_trigger(access.project.id, name)


@router.put("/triggers/{name}/enabled", response_model=TriggerRecord)
def set_trigger_enabled(
    name: str, body: EnabledIn, request: Request, access: Access = Depends(need("editor"))
) -> TriggerRecord:
    store = store_of(request)
    trigger = store.automation.get_trigger(access.project.id, name)
    if body.enabled and not trigger.enabled:
        # what arrived while it was off is let go, not acted on all at once now
        for event in store.automation.pending_events(trigger, limit=100_000):
            fire_id = store.automation.claim_trigger_fire(trigger.id, event.id, time.time())
            if fire_id is not None:
                store.automation.finish_trigger_fire(
                    fire_id, None, "ignored: it arrived while the trigger was disabled"
                )
    changed = store.automation.set_enabled(trigger.id, body.enabled)
    action = "enable-trigger" if body.enabled else "disable-trigger"
    store.audit.record(access.project.id, access.user, action, "trigger", trigger.id)
    return changed


@router.delete("/triggers/{name}", status_code=204)
def delete_trigger(
    name: str, request: Request, access: Access = Depends(need("editor"))
) -> Response:
    store = store_of(request)
    trigger = store.automation.get_trigger(access.project.id, name)
    store.automation.delete_trigger(trigger.id)
    store.audit.record(
        access.project.id, access.user, "delete-trigger", "trigger", trigger.id, {"name": name}
    )
    return Response(status_code=204)


@router.get("/triggers/{name}/fires", response_model=list[TriggerFireRecord])
def trigger_fires(
    name: str,
    request: Request,
    access: Access = Depends(need("viewer")),
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[TriggerFireRecord]:
    store = store_of(request)
    trigger = store.automation.get_trigger(access.project.id, name)
    return store.automation.list_trigger_fires(trigger.id, limit)


def _dispatcher(request: Request) -> Dispatcher:
    found: Dispatcher | None = getattr(request.app.state, "dispatcher", None)
    if found is None:
        raise ConflictError("this server does not start runs", "use `treadle up`")
    return found


@router.post("/triggers/{name}/fire", response_model=Fire, status_code=202)
def fire_trigger(
    name: str, body: FireIn, request: Request, access: Access = Depends(need("editor"))
) -> Fire:
    """Fire a trigger by hand with this payload (a `manual` event)."""
    store = store_of(request)
    trigger = store.automation.get_trigger(access.project.id, name)
    dispatcher = _dispatcher(request)
    payload = {**body.payload, "by": access.user}
    event, _ = store.automation.record_event(
        access.project.id, "manual", f"{trigger.id}:{time.time_ns()}", payload
    )
    _, run_id, outcome = dispatcher.fire(trigger, event)
    store.audit.record(
        access.project.id, access.user, "fire-trigger", "trigger", trigger.id, {"run": run_id}
    )
    return Fire(trigger.name, event, run_id, outcome)


# -- events and causes --------------------------------------------------------------------


@router.get("/events", response_model=list[EventRecord])
def list_events(
    request: Request,
    access: Access = Depends(need("viewer")),
    kind: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[EventRecord]:
    """Events the project's triggers can act on, newest first."""
    return store_of(request).automation.list_events(access.project.id, kind, limit)


def _event_in(store: Store, project_id: str, event_id: str) -> EventRecord:
    try:
        event = store.automation.get_event(event_id)
    except NotFoundError:
        event = None
    if event is None or event.project_id != project_id:
        raise NotFoundError(f"no event with id {event_id!r}")
    return event


@router.get("/events/{event_id}", response_model=EventRecord)
def get_event(
    event_id: str, request: Request, access: Access = Depends(need("viewer"))
) -> EventRecord:
    return _event_in(store_of(request), access.project.id, event_id)


@router.get("/runs/{run_id}/why", response_model=Why)
def why(run_id: str, request: Request, access: Access = Depends(need("viewer"))) -> Why:
    """Why the run happened: who started it, or which schedule and due time, or which
    trigger and event."""
    store = store_of(request)
    run = store.runs.get_run(run_id, access.project.id)
    cause = run.cause or {}
    event = None
    if cause.get("event_id"):
        try:
            event = _event_in(store, access.project.id, str(cause["event_id"]))
        except NotFoundError:
            event = None
    return Why(run, cause, event, explain(run.cause, event))


# -- webhooks -----------------------------------------------------------------------------


@hooks.post("/hooks/{trigger_id}", response_model=Fire, status_code=202)
async def webhook(trigger_id: str, request: Request) -> Fire:
    """A delivery for a webhook trigger, signed instead of carrying a token:
    `X-Treadle-Timestamp: <unix seconds>` and `X-Treadle-Signature: sha256=<hex>`, the
    HMAC-SHA256 of `TIMESTAMP.BODY` with the trigger's secret. The JSON body is the
    event's payload. An old timestamp or a replayed delivery is refused."""
    body = await request.body()
    headers = request.headers
    return await run_in_threadpool(
        _deliver,
        request,
        trigger_id,
        body,
        headers.get("x-treadle-timestamp"),
        headers.get("x-treadle-signature"),
    )


def _deliver(
    request: Request,
    trigger_id: str,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
) -> Fire:
    store = store_of(request)
    try:
        trigger = store.automation.get_trigger_by_id(trigger_id[:64])
    except NotFoundError:
        raise unsigned() from None  # the same answer as a bad signature: ids are not probed
    secret = store.automation.trigger_secret(trigger.id)
    if trigger.kind != "webhook" or secret is None:
        raise unsigned()
    verify(secret, timestamp, signature, body, time.time())
    if not trigger.enabled:
        raise ConflictError(f"trigger {trigger.name!r} is disabled", "enable it to take deliveries")
    try:
        parsed = json.loads(body or b"{}")
    except ValueError:
        raise InvalidInputError("body: the webhook's body is not JSON") from None
    payload = parsed if isinstance(parsed, dict) else {"body": parsed}
    event, new = store.automation.record_event(
        trigger.project_id, "webhook", f"{trigger.id}:{signature}", payload
    )
    if not new:
        raise ConflictError(
            "this delivery was received before (same timestamp and signature)",
            "sign each delivery with a fresh timestamp",
        )
    _, run_id, outcome = _dispatcher(request).fire(trigger, event)
    return Fire(trigger.name, event, run_id, outcome)
