"""Deployments and their numbered revisions (which model versions they serve, and how)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from treadle.errors import ConflictError, NotFoundError
from treadle.store.db import Database, Row
from treadle.store.records import DeploymentRecord, DeploymentRevisionRecord, new_id
from treadle.store.sql.common import NAME_LIMIT, check_length, lock_row, to_json

_LIST_HINT = "list them with `treadle deployments list`"


def _deployment(row: Row) -> DeploymentRecord:
    return DeploymentRecord(
        id=row["id"],
        project_id=row["project_id"],
        name=row["name"],
        model_id=row["model_id"],
        spec=json.loads(row["spec"]),
        created_at=row["created_at"],
        created_by=row["created_by"],
    )


def _revision(row: Row) -> DeploymentRevisionRecord:
    return DeploymentRevisionRecord(
        id=row["id"],
        deployment_id=row["deployment_id"],
        number=int(row["number"]),
        targets=json.loads(row["targets"]),
        reason=row["reason"],
        created_at=row["created_at"],
        created_by=row["created_by"],
    )


class SqlDeploymentStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def create_deployment(
        self, project_id: str, name: str, model_id: str, spec: Mapping[str, Any], user: str
    ) -> DeploymentRecord:
        check_length(name, NAME_LIMIT, "deployment name")
        values = {
            "id": new_id(),
            "project_id": project_id,
            "name": name,
            "model_id": model_id,
            "spec": to_json(dict(spec), "deployment spec"),
            "created_at": time.time(),
            "created_by": user,
        }
        with self._db.write() as conn:
            model = conn.execute(
                "SELECT id FROM registered_models WHERE id = :id AND project_id = :project",
                {"id": model_id, "project": project_id},
            )
            if not model:
                raise NotFoundError(
                    f"no registered model with id {model_id!r} in this project",
                    "list them with `treadle models list`",
                )
            # ON CONFLICT rather than a prior SELECT: two creators racing on PostgreSQL
            # must both see the conflict instead of one failing on the unique constraint.
            inserted = conn.execute(
                "INSERT INTO deployments (id, project_id, name, model_id, spec, created_at, "
                "created_by) VALUES (:id, :project_id, :name, :model_id, :spec, :created_at, "
                ":created_by) ON CONFLICT (project_id, name) DO NOTHING RETURNING id",
                values,
            )
        if not inserted:
            raise ConflictError(
                f"a deployment named {name!r} already exists in this project",
                "choose another name; see the existing ones with `treadle deployments list`",
            )
        return _deployment(values)

    def update_spec(self, deployment_id: str, spec: Mapping[str, Any]) -> DeploymentRecord:
        text = to_json(dict(spec), "deployment spec")
        with self._db.write() as conn:
            rows = conn.execute(
                "UPDATE deployments SET spec = :spec WHERE id = :id RETURNING *",
                {"spec": text, "id": deployment_id},
            )
        if not rows:
            raise NotFoundError(f"no deployment with id {deployment_id!r}", _LIST_HINT)
        return _deployment(rows[0])

    def get_deployment(self, project_id: str, name: str) -> DeploymentRecord:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM deployments WHERE project_id = :project AND name = :name",
                {"project": project_id, "name": name},
            )
        if not rows:
            raise NotFoundError(f"no deployment named {name!r}", _LIST_HINT)
        return _deployment(rows[0])

    def list_deployments(self, project_id: str) -> list[DeploymentRecord]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM deployments WHERE project_id = :project ORDER BY name",
                {"project": project_id},
            )
        return [_deployment(r) for r in rows]

    def add_revision(
        self,
        deployment_id: str,
        targets: Sequence[Mapping[str, Any]],
        *,
        reason: str,
        user: str,
    ) -> DeploymentRevisionRecord:
        """Record the deployment's next revision: 1, 2, 3… however many writers race."""
        values: dict[str, Any] = {
            "id": new_id(),
            "deployment_id": deployment_id,
            "targets": to_json([dict(t) for t in targets], "deployment targets"),
            "reason": reason,
            "created_at": time.time(),
            "created_by": user,
        }
        with self._db.write() as conn:
            if lock_row(conn, self._db.dialect, "deployments", deployment_id) is None:
                raise NotFoundError(f"no deployment with id {deployment_id!r}", _LIST_HINT)
            values["number"] = conn.execute(
                "SELECT COALESCE(MAX(number), 0) + 1 AS next FROM deployment_revisions "
                "WHERE deployment_id = :deployment_id",
                {"deployment_id": deployment_id},
            )[0]["next"]
            conn.execute(
                "INSERT INTO deployment_revisions (id, deployment_id, number, targets, reason, "
                "created_at, created_by) VALUES (:id, :deployment_id, :number, :targets, "
                ":reason, :created_at, :created_by)",
                values,
            )
        return _revision(values)

    def current_revision(self, deployment_id: str) -> DeploymentRevisionRecord | None:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM deployment_revisions WHERE deployment_id = :deployment "
                "ORDER BY number DESC LIMIT 1",
                {"deployment": deployment_id},
            )
        return _revision(rows[0]) if rows else None

    def list_revisions(self, deployment_id: str) -> list[DeploymentRevisionRecord]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM deployment_revisions WHERE deployment_id = :deployment "
                "ORDER BY number",
                {"deployment": deployment_id},
            )
        return [_revision(r) for r in rows]
