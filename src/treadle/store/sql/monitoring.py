"""Monitors, the windows they computed, and their alerts."""

from __future__ import annotations

import json
from typing import Any

from treadle.errors import ConflictError, NotFoundError
from treadle.store.db import Database, Row
from treadle.store.records import AlertRecord, MonitorRecord, MonitorWindowRecord, new_id
from treadle.store.sql.common import NAME_LIMIT, check_length


def _monitor(row: Row) -> MonitorRecord:
    return MonitorRecord(
        id=row["id"],
        project_id=row["project_id"],
        name=row["name"],
        deployment=row["deployment"],
        window_kind=row["window_kind"],
        window_size=row["window_size"],
        thresholds=json.loads(row["thresholds"]),
        rules=json.loads(row["rules"]),
        state=row["state"],
        detail=row["detail"],
        cursor=row["cursor"],
        created_by=row["created_by"],
        created_at=row["created_at"],
    )


def _window(row: Row) -> MonitorWindowRecord:
    return MonitorWindowRecord(
        id=row["id"],
        monitor_id=row["monitor_id"],
        seq=row["seq"],
        start_ts=row["start_ts"],
        end_ts=row["end_ts"],
        rows=row["rows"],
        status=row["status"],
        stats=json.loads(row["stats"]),
        created_at=row["created_at"],
    )


def _alert(row: Row) -> AlertRecord:
    return AlertRecord(
        id=row["id"],
        monitor_id=row["monitor_id"],
        project_id=row["project_id"],
        name=row["name"],
        rule=row["rule"],
        state=row["state"],
        value=row["value"],
        fired_seq=row["fired_seq"],
        fired_at=row["fired_at"],
        resolved_at=row["resolved_at"],
        event_id=row["event_id"],
    )


class SqlMonitoringStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def create_monitor(self, monitor: MonitorRecord) -> MonitorRecord:
        check_length(monitor.name, NAME_LIMIT, "monitor name")
        values: dict[str, Any] = {
            k: getattr(monitor, k) for k in MonitorRecord.__dataclass_fields__
        }
        values["thresholds"] = json.dumps(monitor.thresholds, sort_keys=True)
        values["rules"] = json.dumps(monitor.rules)
        with self._db.write() as conn:
            if conn.execute(
                "SELECT 1 FROM monitors WHERE project_id = :project_id AND name = :name", values
            ):
                raise ConflictError(
                    f"a monitor named {monitor.name!r} exists", "pick another name, or delete it"
                )
            conn.execute(
                "INSERT INTO monitors (id, project_id, name, deployment, window_kind, "
                "window_size, thresholds, rules, state, detail, cursor, created_by, created_at) "
                "VALUES (:id, :project_id, :name, :deployment, :window_kind, :window_size, "
                ":thresholds, :rules, :state, :detail, :cursor, :created_by, :created_at)",
                values,
            )
        return monitor

    def get_monitor(self, project_id: str, name: str) -> MonitorRecord:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM monitors WHERE project_id = :p AND name = :n",
                {"p": project_id, "n": name},
            )
        if not rows:
            raise NotFoundError(f"no monitor named {name!r}", "list them: treadle monitor list")
        return _monitor(rows[0])

    def get_monitor_by_id(self, monitor_id: str) -> MonitorRecord:
        with self._db.read() as conn:
            rows = conn.execute("SELECT * FROM monitors WHERE id = :id", {"id": monitor_id})
        if not rows:
            raise NotFoundError(f"no monitor with id {monitor_id!r}")
        return _monitor(rows[0])

    def list_monitors(self, project_id: str | None = None) -> list[MonitorRecord]:
        with self._db.read() as conn:
            if project_id is None:
                rows = conn.execute("SELECT * FROM monitors ORDER BY id")
            else:
                rows = conn.execute(
                    "SELECT * FROM monitors WHERE project_id = :p ORDER BY name", {"p": project_id}
                )
        return [_monitor(r) for r in rows]

    def set_state(self, monitor_id: str, state: str, detail: str = "") -> None:
        with self._db.write() as conn:
            conn.execute(
                "UPDATE monitors SET state = :s, detail = :d WHERE id = :id",
                {"s": state, "d": detail, "id": monitor_id},
            )

    def delete_monitor(self, monitor_id: str) -> None:
        with self._db.write() as conn:
            for table in ("alerts", "monitor_windows"):
                conn.execute(f"DELETE FROM {table} WHERE monitor_id = :id", {"id": monitor_id})
            conn.execute("DELETE FROM monitors WHERE id = :id", {"id": monitor_id})

    def add_window(
        self,
        monitor_id: str,
        *,
        start_ts: float,
        end_ts: float,
        rows: int,
        status: str,
        stats: dict[str, Any],
        cursor: float,
        at: float,
    ) -> MonitorWindowRecord | None:
        """Record the monitor's next window and move its cursor, in one transaction; None
        if another monitor loop recorded a window from this cursor first."""
        with self._db.write() as conn:
            found = conn.execute("SELECT cursor FROM monitors WHERE id = :id", {"id": monitor_id})
            if not found or found[0]["cursor"] >= cursor:
                return None
            last = conn.execute(
                "SELECT MAX(seq) AS seq FROM monitor_windows WHERE monitor_id = :id",
                {"id": monitor_id},
            )
            seq = (last[0]["seq"] or 0) + 1 if last else 1
            values = {
                "id": new_id(),
                "monitor_id": monitor_id,
                "seq": seq,
                "start_ts": start_ts,
                "end_ts": end_ts,
                "rows": rows,
                "status": status,
                "stats": json.dumps(stats, sort_keys=True, default=str),
                "created_at": at,
            }
            conn.execute(
                "INSERT INTO monitor_windows (id, monitor_id, seq, start_ts, end_ts, rows, "
                "status, stats, created_at) VALUES (:id, :monitor_id, :seq, :start_ts, "
                ":end_ts, :rows, :status, :stats, :created_at)",
                values,
            )
            conn.execute(
                "UPDATE monitors SET cursor = :c WHERE id = :id", {"c": cursor, "id": monitor_id}
            )
        return MonitorWindowRecord(**{**values, "stats": stats})  # type: ignore[arg-type]

    def list_windows(
        self, monitor_id: str, limit: int = 100, before_seq: int | None = None
    ) -> list[MonitorWindowRecord]:
        """Newest first."""
        extra = " AND seq < :before" if before_seq is not None else ""
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT * FROM monitor_windows WHERE monitor_id = :id{extra} "
                "ORDER BY seq DESC LIMIT :limit",
                {"id": monitor_id, "limit": limit, "before": before_seq},
            )
        return [_window(r) for r in rows]

    def open_alert(
        self,
        monitor: MonitorRecord,
        name: str,
        rule: str,
        value: float | None,
        seq: int,
        at: float,
    ) -> AlertRecord:
        values = {
            "id": new_id(),
            "monitor_id": monitor.id,
            "project_id": monitor.project_id,
            "name": name,
            "rule": rule,
            "state": "firing",
            "value": value,
            "fired_seq": seq,
            "fired_at": at,
            "resolved_at": None,
            "event_id": None,
        }
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO alerts (id, monitor_id, project_id, name, rule, state, value, "
                "fired_seq, fired_at, resolved_at, event_id) VALUES (:id, :monitor_id, "
                ":project_id, :name, :rule, :state, :value, :fired_seq, :fired_at, "
                ":resolved_at, :event_id)",
                values,
            )
        return AlertRecord(**values)  # type: ignore[arg-type]

    def link_event(self, alert_id: str, event_id: str) -> None:
        with self._db.write() as conn:
            conn.execute(
                "UPDATE alerts SET event_id = :e WHERE id = :id", {"e": event_id, "id": alert_id}
            )

    def resolve_alert(self, alert_id: str, at: float) -> None:
        with self._db.write() as conn:
            conn.execute(
                "UPDATE alerts SET state = 'resolved', resolved_at = :at WHERE id = :id",
                {"at": at, "id": alert_id},
            )

    def list_alerts(
        self,
        project_id: str,
        monitor_id: str | None = None,
        state: str | None = None,
        limit: int = 100,
    ) -> list[AlertRecord]:
        """Newest first."""
        where = ["project_id = :p"]
        args: dict[str, Any] = {"p": project_id, "limit": limit}
        if monitor_id is not None:
            where.append("monitor_id = :m")
            args["m"] = monitor_id
        if state is not None:
            where.append("state = :s")
            args["s"] = state
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT * FROM alerts WHERE {' AND '.join(where)} "
                "ORDER BY fired_at DESC LIMIT :limit",
                args,
            )
        return [_alert(r) for r in rows]
