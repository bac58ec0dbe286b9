"""Policies (the closed loop written down) and each time one acted on an event."""

from __future__ import annotations

import json
from typing import Any

from treadle.errors import ConflictError, NotFoundError
from treadle.store.db import Database, Row
from treadle.store.records import PolicyRecord, PolicyRunRecord, new_id
from treadle.store.sql.common import NAME_LIMIT, check_length


def _policy(row: Row) -> PolicyRecord:
    return PolicyRecord(
        row["id"],
        row["project_id"],
        row["name"],
        json.loads(row["spec"]),
        bool(row["enabled"]),
        row["created_by"],
        row["created_at"],
    )


def _run(row: Row) -> PolicyRunRecord:
    return PolicyRunRecord(
        id=row["id"],
        policy_id=row["policy_id"],
        project_id=row["project_id"],
        event_id=row["event_id"],
        state=row["state"],
        step=row["step"],
        steps=json.loads(row["steps"]),
        context=json.loads(row["context"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class SqlPolicyStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def put_policy(self, policy: PolicyRecord, replace: bool = False) -> PolicyRecord:
        """Create the policy, or (with `replace`) change the spec of the one so named."""
        check_length(policy.name, NAME_LIMIT, "policy name")
        values = {
            "id": policy.id,
            "project_id": policy.project_id,
            "name": policy.name,
            "spec": json.dumps(policy.spec, sort_keys=True),
            "enabled": policy.enabled,
            "created_by": policy.created_by,
            "created_at": policy.created_at,
        }
        with self._db.write() as conn:
            found = conn.execute(
                "SELECT id FROM policies WHERE project_id = :project_id AND name = :name", values
            )
            if found and not replace:
                raise ConflictError(
                    f"a policy named {policy.name!r} exists", "pass --replace to change it"
                )
            if found:
                conn.execute(
                    "UPDATE policies SET spec = :spec, enabled = :enabled WHERE id = :id",
                    {**values, "id": found[0]["id"]},
                )
            else:
                conn.execute(
                    "INSERT INTO policies (id, project_id, name, spec, enabled, created_by, "
                    "created_at) VALUES (:id, :project_id, :name, :spec, :enabled, "
                    ":created_by, :created_at)",
                    values,
                )
        return self.get_policy(policy.project_id, policy.name)

    def get_policy(self, project_id: str, name: str) -> PolicyRecord:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM policies WHERE project_id = :p AND name = :n",
                {"p": project_id, "n": name},
            )
        if not rows:
            raise NotFoundError(f"no policy named {name!r}", "list them: treadle policies list")
        return _policy(rows[0])

    def get_policy_by_id(self, policy_id: str) -> PolicyRecord:
        with self._db.read() as conn:
            rows = conn.execute("SELECT * FROM policies WHERE id = :id", {"id": policy_id})
        if not rows:
            raise NotFoundError(f"no policy with id {policy_id!r}")
        return _policy(rows[0])

    def list_policies(self, project_id: str | None = None) -> list[PolicyRecord]:
        with self._db.read() as conn:
            if project_id is None:
                rows = conn.execute("SELECT * FROM policies ORDER BY id")
            else:
                rows = conn.execute(
                    "SELECT * FROM policies WHERE project_id = :p ORDER BY name", {"p": project_id}
                )
        return [_policy(r) for r in rows]

    def set_enabled(self, policy_id: str, enabled: bool) -> None:
        with self._db.write() as conn:
            conn.execute(
                "UPDATE policies SET enabled = :e WHERE id = :id", {"e": enabled, "id": policy_id}
            )

    def delete_policy(self, policy_id: str) -> None:
        with self._db.write() as conn:
            conn.execute("DELETE FROM policy_runs WHERE policy_id = :id", {"id": policy_id})
            conn.execute("DELETE FROM policies WHERE id = :id", {"id": policy_id})

    def claim(
        self,
        policy: PolicyRecord,
        event_id: str,
        steps: list[dict[str, Any]],
        at: float,
        state: str = "running",
    ) -> PolicyRunRecord | None:
        """Start acting on an event, once: None if this policy already did. An event
        the policy lets go is claimed as `ignored`."""
        run_id = new_id()
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO policy_runs (id, policy_id, project_id, event_id, state, step, "
                "steps, context, created_at, updated_at) VALUES (:id, :policy, :project, "
                ":event, :state, 'run', :steps, '{}', :at, :at) "
                "ON CONFLICT (policy_id, event_id) DO NOTHING",
                {
                    "id": run_id,
                    "policy": policy.id,
                    "project": policy.project_id,
                    "event": event_id,
                    "steps": json.dumps(steps),
                    "at": at,
                    "state": state,
                },
            )
            rows = conn.execute("SELECT * FROM policy_runs WHERE id = :id", {"id": run_id})
        return _run(rows[0]) if rows else None

    def pending_events(
        self, policy: PolicyRecord, kind: str, limit: int = 200
    ) -> list[dict[str, Any]]:
        """Events of `kind` in the policy's project since it was made that it has not
        looked at yet (acted on or let go), oldest first, as raw rows."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT e.id FROM events e WHERE e.project_id = :p AND e.kind = :kind "
                "AND e.created_at >= :since AND NOT EXISTS (SELECT 1 FROM policy_runs r "
                "WHERE r.policy_id = :policy AND r.event_id = e.id) "
                "ORDER BY e.created_at, e.id LIMIT :limit",
                {
                    "p": policy.project_id,
                    "kind": kind,
                    "since": policy.created_at,
                    "policy": policy.id,
                    "limit": limit,
                },
            )
        return [dict(r) for r in rows]

    def update(
        self,
        run_id: str,
        *,
        state: str,
        step: str,
        steps: list[dict[str, Any]],
        context: dict[str, Any],
        at: float,
    ) -> PolicyRunRecord:
        with self._db.write() as conn:
            conn.execute(
                "UPDATE policy_runs SET state = :state, step = :step, steps = :steps, "
                "context = :context, updated_at = :at WHERE id = :id",
                {
                    "state": state,
                    "step": step,
                    "steps": json.dumps(steps, default=str),
                    "context": json.dumps(context, default=str),
                    "at": at,
                    "id": run_id,
                },
            )
        return self.get_run(run_id)

    def get_run(self, run_id: str) -> PolicyRunRecord:
        with self._db.read() as conn:
            rows = conn.execute("SELECT * FROM policy_runs WHERE id = :id", {"id": run_id})
        if not rows:
            raise NotFoundError(f"no policy run with id {run_id!r}")
        return _run(rows[0])

    def list_runs(
        self,
        project_id: str | None = None,
        policy_id: str | None = None,
        state: str | None = None,
        limit: int = 100,
    ) -> list[PolicyRunRecord]:
        """Newest first."""
        where: list[str] = []
        args: dict[str, Any] = {"limit": limit}
        for column, value in (("project_id", project_id), ("policy_id", policy_id)):
            if value is not None:
                where.append(f"{column} = :{column}")
                args[column] = value
        if state is not None:
            where.append("state = :state")
            args["state"] = state
        else:  # events a policy let go are not runs of it
            where.append("state <> 'ignored'")
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT * FROM policy_runs {clause}ORDER BY created_at DESC LIMIT :limit", args
            )
        return [_run(r) for r in rows]
