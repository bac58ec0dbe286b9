"""Schedules, triggers, the events they act on, and the fires that record each action.

A fire is claimed by inserting its row under a unique key — (schedule, due time) or
(trigger, event) — with `ON CONFLICT DO NOTHING`: of two control planes racing on one
database, exactly one gets the row and starts the run.
"""

from __future__ import annotations

import json
import time
from typing import Any

from treadle.errors import ConflictError, NotFoundError
from treadle.store.db import Database, Row
from treadle.store.records import (
    EventRecord,
    ScheduleFireRecord,
    ScheduleRecord,
    TriggerFireRecord,
    TriggerRecord,
    new_id,
)
from treadle.store.sql.common import NAME_LIMIT, check_length


def _schedule(row: Row) -> ScheduleRecord:
    return ScheduleRecord(
        id=row["id"],
        project_id=row["project_id"],
        name=row["name"],
        pipeline=row["pipeline"],
        cron=row["cron"],
        timezone=row["timezone"],
        params=json.loads(row["params"]),
        catchup=row["catchup"],
        max_catchup=row["max_catchup"],
        concurrency=row["concurrency"],
        paused=bool(row["paused"]),
        handled_until=row["handled_until"],
        created_by=row["created_by"],
        created_at=row["created_at"],
    )


def _trigger(row: Row) -> TriggerRecord:
    return TriggerRecord(
        id=row["id"],
        project_id=row["project_id"],
        name=row["name"],
        kind=row["kind"],
        pipeline=row["pipeline"],
        params=json.loads(row["params"]),
        filter=json.loads(row["filter"]),
        enabled=bool(row["enabled"]),
        created_by=row["created_by"],
        created_at=row["created_at"],
        has_secret=row["secret"] is not None,
    )


def _event(row: Row) -> EventRecord:
    return EventRecord(
        row["id"],
        row["project_id"],
        row["kind"],
        row["key"],
        json.loads(row["payload"]),
        row["created_at"],
    )


def _fire(row: Row) -> ScheduleFireRecord:
    return ScheduleFireRecord(
        row["id"], row["schedule_id"], row["due_at"], row["fired_at"], row["run_id"], row["outcome"]
    )


def _trigger_fire(row: Row) -> TriggerFireRecord:
    return TriggerFireRecord(
        row["id"],
        row["trigger_id"],
        row["event_id"],
        row["fired_at"],
        row["run_id"],
        row["outcome"],
    )


class SqlAutomationStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- schedules ----------------------------------------------------------------------

    def create_schedule(self, schedule: ScheduleRecord) -> ScheduleRecord:
        check_length(schedule.name, NAME_LIMIT, "schedule name")
        values = {
            **{k: getattr(schedule, k) for k in ScheduleRecord.__dataclass_fields__},
            "params": json.dumps(schedule.params, sort_keys=True),
        }
        with self._db.write() as conn:
            taken = conn.execute(
                "SELECT 1 FROM schedules WHERE project_id = :project_id AND name = :name", values
            )
            if taken:
                raise ConflictError(
                    f"a schedule named {schedule.name!r} exists",
                    "pick another name, or delete it first",
                )
            conn.execute(
                "INSERT INTO schedules (id, project_id, name, pipeline, cron, timezone, params, "
                "catchup, max_catchup, concurrency, paused, handled_until, created_by, "
                "created_at) VALUES (:id, :project_id, :name, :pipeline, :cron, :timezone, "
                ":params, :catchup, :max_catchup, :concurrency, :paused, :handled_until, "
                ":created_by, :created_at)",
                values,
            )
        return schedule

    def get_schedule(self, project_id: str, name: str) -> ScheduleRecord:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM schedules WHERE project_id = :p AND name = :n",
                {"p": project_id, "n": name},
            )
        if not rows:
            raise NotFoundError(f"no schedule named {name!r}", "list them: treadle schedules list")
        return _schedule(rows[0])

    def get_schedule_by_id(self, schedule_id: str) -> ScheduleRecord:
        with self._db.read() as conn:
            rows = conn.execute("SELECT * FROM schedules WHERE id = :id", {"id": schedule_id})
        if not rows:
            raise NotFoundError(f"no schedule with id {schedule_id!r}")
        return _schedule(rows[0])

    def list_schedules(self, project_id: str | None = None) -> list[ScheduleRecord]:
        """The project's schedules by name, or every project's when None."""
        with self._db.read() as conn:
            if project_id is None:
                rows = conn.execute("SELECT * FROM schedules ORDER BY id")
            else:
                rows = conn.execute(
                    "SELECT * FROM schedules WHERE project_id = :p ORDER BY name",
                    {"p": project_id},
                )
        return [_schedule(r) for r in rows]

    def set_paused(self, schedule_id: str, paused: bool, at: float) -> ScheduleRecord:
        """Pause, or resume: due times that passed while paused are let go."""
        with self._db.write() as conn:
            conn.execute(
                "UPDATE schedules SET paused = :paused, handled_until = CASE WHEN "
                "handled_until < :at THEN :at ELSE handled_until END WHERE id = :id",
                {"paused": paused, "at": at, "id": schedule_id},
            )
        return self.get_schedule_by_id(schedule_id)

    def delete_schedule(self, schedule_id: str) -> None:
        with self._db.write() as conn:
            conn.execute("DELETE FROM schedule_fires WHERE schedule_id = :id", {"id": schedule_id})
            conn.execute("DELETE FROM schedules WHERE id = :id", {"id": schedule_id})

    def advance(self, schedule_id: str, until: float) -> None:
        """Due times up to `until` are handled; never moves back."""
        with self._db.write() as conn:
            conn.execute(
                "UPDATE schedules SET handled_until = :until "
                "WHERE id = :id AND handled_until < :until",
                {"id": schedule_id, "until": until},
            )

    def claim_fire(self, schedule_id: str, due_at: float, at: float) -> str | None:
        """The new fire's id if this caller is the one to fire (schedule, due_at); None
        when another scheduler already did."""
        fire_id = new_id()
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO schedule_fires (id, schedule_id, due_at, fired_at, run_id, outcome) "
                "VALUES (:id, :s, :due, :at, NULL, 'firing') "
                "ON CONFLICT (schedule_id, due_at) DO NOTHING",
                {"id": fire_id, "s": schedule_id, "due": due_at, "at": at},
            )
            rows = conn.execute(
                "SELECT id FROM schedule_fires WHERE schedule_id = :s AND due_at = :due",
                {"s": schedule_id, "due": due_at},
            )
        return fire_id if rows and rows[0]["id"] == fire_id else None

    def finish_fire(self, fire_id: str, run_id: str | None, outcome: str) -> None:
        with self._db.write() as conn:
            conn.execute(
                "UPDATE schedule_fires SET run_id = :run, outcome = :outcome WHERE id = :id",
                {"run": run_id, "outcome": outcome, "id": fire_id},
            )

    def list_fires(self, schedule_id: str, limit: int = 50) -> list[ScheduleFireRecord]:
        """Newest due time first."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM schedule_fires WHERE schedule_id = :s "
                "ORDER BY due_at DESC LIMIT :limit",
                {"s": schedule_id, "limit": limit},
            )
        return [_fire(r) for r in rows]

    def running_runs(self, schedule_id: str) -> list[str]:
        """Ids of the schedule's runs that are still RUNNING."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT r.id FROM schedule_fires f JOIN runs r ON r.id = f.run_id "
                "WHERE f.schedule_id = :s AND r.state = 'RUNNING'",
                {"s": schedule_id},
            )
        return [r["id"] for r in rows]

    # -- triggers -----------------------------------------------------------------------

    def create_trigger(self, trigger: TriggerRecord, secret: str | None) -> TriggerRecord:
        check_length(trigger.name, NAME_LIMIT, "trigger name")
        values: dict[str, Any] = {
            k: getattr(trigger, k) for k in TriggerRecord.__dataclass_fields__ if k != "has_secret"
        }
        values.update(
            params=json.dumps(trigger.params, sort_keys=True),
            filter=json.dumps(trigger.filter, sort_keys=True),
            secret=secret,
        )
        with self._db.write() as conn:
            taken = conn.execute(
                "SELECT 1 FROM triggers WHERE project_id = :project_id AND name = :name", values
            )
            if taken:
                raise ConflictError(
                    f"a trigger named {trigger.name!r} exists",
                    "pick another name, or delete it first",
                )
            conn.execute(
                "INSERT INTO triggers (id, project_id, name, kind, pipeline, params, filter, "
                "secret, enabled, created_by, created_at) VALUES (:id, :project_id, :name, "
                ":kind, :pipeline, :params, :filter, :secret, :enabled, :created_by, "
                ":created_at)",
                values,
            )
        return self.get_trigger_by_id(trigger.id)

    def get_trigger(self, project_id: str, name: str) -> TriggerRecord:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM triggers WHERE project_id = :p AND name = :n",
                {"p": project_id, "n": name},
            )
        if not rows:
            raise NotFoundError(f"no trigger named {name!r}", "list them: treadle triggers list")
        return _trigger(rows[0])

    def get_trigger_by_id(self, trigger_id: str) -> TriggerRecord:
        with self._db.read() as conn:
            rows = conn.execute("SELECT * FROM triggers WHERE id = :id", {"id": trigger_id})
        if not rows:
            raise NotFoundError(f"no trigger with id {trigger_id!r}")
        return _trigger(rows[0])

    def trigger_secret(self, trigger_id: str) -> str | None:
        with self._db.read() as conn:
            rows = conn.execute("SELECT secret FROM triggers WHERE id = :id", {"id": trigger_id})
        return rows[0]["secret"] if rows else None

    def list_triggers(
        self, project_id: str | None = None, kind: str | None = None
    ) -> list[TriggerRecord]:
        where, args = [], {}
        if project_id is not None:
            where.append("project_id = :p")
            args["p"] = project_id
        if kind is not None:
            where.append("kind = :k")
            args["k"] = kind
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        with self._db.read() as conn:
            rows = conn.execute(f"SELECT * FROM triggers {clause}ORDER BY name, id", args)
        return [_trigger(r) for r in rows]

    def set_enabled(self, trigger_id: str, enabled: bool) -> TriggerRecord:
        with self._db.write() as conn:
            conn.execute(
                "UPDATE triggers SET enabled = :e WHERE id = :id", {"e": enabled, "id": trigger_id}
            )
        return self.get_trigger_by_id(trigger_id)

    def delete_trigger(self, trigger_id: str) -> None:
        with self._db.write() as conn:
            conn.execute("DELETE FROM trigger_fires WHERE trigger_id = :id", {"id": trigger_id})
            conn.execute("DELETE FROM triggers WHERE id = :id", {"id": trigger_id})

    # -- events -------------------------------------------------------------------------

    def record_event(
        self,
        project_id: str,
        kind: str,
        key: str,
        payload: dict[str, Any],
        at: float | None = None,
    ) -> tuple[EventRecord, bool]:
        """The event (kind, key) of the project, recorded once; True if this call did."""
        event_id = new_id()
        args = {
            "id": event_id,
            "p": project_id,
            "kind": kind,
            "key": key[:200],
            "payload": json.dumps(payload, sort_keys=True, default=str),
            "at": time.time() if at is None else at,
        }
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO events (id, project_id, kind, key, payload, created_at) "
                "VALUES (:id, :p, :kind, :key, :payload, :at) "
                "ON CONFLICT (project_id, kind, key) DO NOTHING",
                args,
            )
            rows = conn.execute(
                "SELECT * FROM events WHERE project_id = :p AND kind = :kind AND key = :key",
                args,
            )
        event = _event(rows[0])
        return event, event.id == event_id

    def changes(
        self, kind: str, project_ids: set[str], since: float
    ) -> list[tuple[str, str, dict[str, Any], float]]:
        """What happened in these projects after `since` that makes an event of `kind`:
        (project id, event key, payload, when)."""
        if not project_ids:
            return []
        names = {f"p{i}": p for i, p in enumerate(sorted(project_ids))}
        within = ", ".join(f":{k}" for k in names)
        args: dict[str, Any] = {**names, "since": since}
        with self._db.read() as conn:
            if kind == "run.finished":
                rows = conn.execute(
                    "SELECT r.id, r.project_id, r.state, r.attempt, r.ended_at, r.name, "
                    "r.pipeline_version_id, p.name AS pipeline FROM runs r "
                    "LEFT JOIN pipeline_versions v ON v.id = r.pipeline_version_id "
                    "LEFT JOIN pipelines p ON p.id = v.pipeline_id "
                    f"WHERE r.project_id IN ({within}) AND r.ended_at > :since "
                    "AND r.state IN ('SUCCEEDED', 'FAILED')",
                    args,
                )
                return [
                    (
                        r["project_id"],
                        f"{r['id']}:{r['attempt']}",
                        {
                            "run_id": r["id"],
                            "run": r["name"],
                            "state": r["state"],
                            "pipeline": r["pipeline"],
                            "pipeline_version_id": r["pipeline_version_id"],
                        },
                        r["ended_at"],
                    )
                    for r in rows
                ]
            if kind == "model.registered":
                rows = conn.execute(
                    "SELECT v.id, v.version, v.metrics, v.run_id, v.flavor, v.created_at, m.name, "
                    "m.project_id "
                    "FROM model_versions v JOIN registered_models m ON m.id = v.model_id "
                    f"WHERE m.project_id IN ({within}) AND v.created_at > :since",
                    args,
                )
                return [
                    (
                        r["project_id"],
                        r["id"],
                        {
                            "model": r["name"],
                            "version": r["version"],
                            "version_id": r["id"],
                            "ref": f"{r['name']}@{r['version']}",
                            "run_id": r["run_id"],
                            "flavor": r["flavor"],
                            "metrics": json.loads(r["metrics"]),
                        },
                        r["created_at"],
                    )
                    for r in rows
                ]
            if kind == "artifact.created":
                rows = conn.execute(
                    "SELECT id, project_id, name, kind, sha256, uri, run_id, created_at "
                    "FROM artifacts "
                    f"WHERE project_id IN ({within}) AND created_at > :since",
                    args,
                )
                return [
                    (
                        r["project_id"],
                        r["id"],
                        {
                            "artifact_id": r["id"],
                            "name": r["name"],
                            "kind": r["kind"],
                            "sha256": r["sha256"],
                            "uri": r["uri"],
                            "run_id": r["run_id"],
                        },
                        r["created_at"],
                    )
                    for r in rows
                ]
        raise NotFoundError(f"no store changes make events of kind {kind!r}")

    def get_event(self, event_id: str) -> EventRecord:
        with self._db.read() as conn:
            rows = conn.execute("SELECT * FROM events WHERE id = :id", {"id": event_id})
        if not rows:
            raise NotFoundError(f"no event with id {event_id!r}")
        return _event(rows[0])

    def list_events(
        self, project_id: str, kind: str | None = None, limit: int = 50
    ) -> list[EventRecord]:
        """Newest first."""
        args: dict[str, Any] = {"p": project_id, "limit": limit, "kind": kind}
        extra = " AND kind = :kind" if kind else ""
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT * FROM events WHERE project_id = :p{extra} "
                "ORDER BY created_at DESC, id DESC LIMIT :limit",
                args,
            )
        return [_event(r) for r in rows]

    def pending_events(self, trigger: TriggerRecord, limit: int = 100) -> list[EventRecord]:
        """Events of the trigger's kind since it was made that it has not acted on."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT e.* FROM events e WHERE e.project_id = :p AND e.kind = :kind "
                "AND e.created_at >= :since AND NOT EXISTS (SELECT 1 FROM trigger_fires f "
                "WHERE f.trigger_id = :t AND f.event_id = e.id) "
                "ORDER BY e.created_at, e.id LIMIT :limit",
                {
                    "p": trigger.project_id,
                    "kind": trigger.kind,
                    "since": trigger.created_at,
                    "t": trigger.id,
                    "limit": limit,
                },
            )
        return [_event(r) for r in rows]

    def claim_trigger_fire(self, trigger_id: str, event_id: str, at: float) -> str | None:
        fire_id = new_id()
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO trigger_fires (id, trigger_id, event_id, fired_at, run_id, outcome) "
                "VALUES (:id, :t, :e, :at, NULL, 'firing') "
                "ON CONFLICT (trigger_id, event_id) DO NOTHING",
                {"id": fire_id, "t": trigger_id, "e": event_id, "at": at},
            )
            rows = conn.execute(
                "SELECT id FROM trigger_fires WHERE trigger_id = :t AND event_id = :e",
                {"t": trigger_id, "e": event_id},
            )
        return fire_id if rows and rows[0]["id"] == fire_id else None

    def finish_trigger_fire(self, fire_id: str, run_id: str | None, outcome: str) -> None:
        with self._db.write() as conn:
            conn.execute(
                "UPDATE trigger_fires SET run_id = :run, outcome = :outcome WHERE id = :id",
                {"run": run_id, "outcome": outcome, "id": fire_id},
            )

    def list_trigger_fires(self, trigger_id: str, limit: int = 50) -> list[TriggerFireRecord]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM trigger_fires WHERE trigger_id = :t "
                "ORDER BY fired_at DESC LIMIT :limit",
                {"t": trigger_id, "limit": limit},
            )
        return [_trigger_fire(r) for r in rows]
