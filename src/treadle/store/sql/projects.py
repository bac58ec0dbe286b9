"""Projects and experiments."""

from __future__ import annotations

import time

from treadle.errors import NotFoundError
from treadle.store.db import Database, Row
from treadle.store.records import ExperimentRecord, ExperimentSummary, ProjectRecord, new_id
from treadle.store.sql.common import NAME_LIMIT, check_length, ensure_row


def _experiment(row: Row) -> ExperimentRecord:
    return ExperimentRecord(
        id=row["id"],
        project_id=row["project_id"],
        name=row["name"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        description=row["description"],
    )


class SqlProjectStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def ensure_project(self, name: str, user: str) -> ProjectRecord:
        check_length(name, NAME_LIMIT, "project name")
        row = ensure_row(
            self._db,
            "SELECT * FROM projects WHERE name = :name",
            {"name": name},
            "INSERT INTO projects (id, name, created_at, created_by) "
            "VALUES (:id, :name, :at, :user) ON CONFLICT (name) DO NOTHING",
            {"id": new_id(), "name": name, "at": time.time(), "user": user},
        )
        return ProjectRecord(row["id"], row["name"], row["created_at"], row["created_by"])

    def get_project(self, name: str) -> ProjectRecord:
        with self._db.read() as conn:
            rows = conn.execute("SELECT * FROM projects WHERE name = :name", {"name": name})
        if not rows:
            raise NotFoundError(f"no project {name!r}", "list yours with `treadle projects list`")
        row = rows[0]
        return ProjectRecord(row["id"], row["name"], row["created_at"], row["created_by"])

    def list_projects(self) -> list[ProjectRecord]:
        with self._db.read() as conn:
            rows = conn.execute("SELECT * FROM projects ORDER BY name")
        return [ProjectRecord(r["id"], r["name"], r["created_at"], r["created_by"]) for r in rows]

    def ensure_experiment(self, project_id: str, name: str, user: str) -> ExperimentRecord:
        check_length(name, NAME_LIMIT, "experiment name")
        args = {"project": project_id, "name": name}
        return _experiment(
            ensure_row(
                self._db,
                "SELECT * FROM experiments WHERE project_id = :project AND name = :name",
                args,
                "INSERT INTO experiments (id, project_id, name, description, created_at, "
                "created_by) VALUES (:id, :project, :name, '', :at, :user) "
                "ON CONFLICT (project_id, name) DO NOTHING",
                {**args, "id": new_id(), "at": time.time(), "user": user},
            )
        )

    def get_experiment(self, experiment_id: str) -> ExperimentRecord:
        with self._db.read() as conn:
            rows = conn.execute("SELECT * FROM experiments WHERE id = :id", {"id": experiment_id})
        if not rows:
            raise NotFoundError(f"no experiment with id {experiment_id!r}")
        return _experiment(rows[0])

    def find_experiment(self, project_id: str, name: str) -> ExperimentRecord:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM experiments WHERE project_id = :project AND name = :name",
                {"project": project_id, "name": name},
            )
        if not rows:
            raise NotFoundError(
                f"no experiment named {name!r}", "list them with `treadle experiments list`"
            )
        return _experiment(rows[0])

    def list_experiments(self, project_id: str) -> list[ExperimentSummary]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT e.*, COUNT(r.id) AS run_count, MAX(r.created_at) AS last_run_at "
                "FROM experiments e LEFT JOIN runs r ON r.experiment_id = e.id "
                "WHERE e.project_id = :project "
                "GROUP BY e.id, e.project_id, e.name, e.description, e.created_at, e.created_by "
                "ORDER BY e.name",
                {"project": project_id},
            )
        return [
            ExperimentSummary(_experiment(r), int(r["run_count"]), r["last_run_at"]) for r in rows
        ]
