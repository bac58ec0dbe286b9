"""Pipelines and their immutable, content-hashed versions."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from typing import Any

from treadle.errors import NotFoundError
from treadle.store.db import Database, Row
from treadle.store.records import PipelineRecord, PipelineVersionRecord, new_id
from treadle.store.sql.common import NAME_LIMIT, check_length


def _pipeline(row: Row) -> PipelineRecord:
    return PipelineRecord(
        row["id"], row["project_id"], row["name"], row["created_at"], row["current_version_id"]
    )


def _version(row: Row) -> PipelineVersionRecord:
    return PipelineVersionRecord(
        id=row["id"],
        pipeline_id=row["pipeline_id"],
        hash=row["hash"],
        spec=json.loads(row["spec"]),
        source=row["source"],
        created_at=row["created_at"],
    )


class SqlPipelineStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def ensure_version(
        self, project_id: str, name: str, hash: str, spec: Mapping[str, Any], source: str
    ) -> tuple[PipelineRecord, PipelineVersionRecord]:
        check_length(name, NAME_LIMIT, "pipeline name")
        find = (
            "SELECT p.id AS p_id, p.project_id, p.name, p.created_at AS p_created_at, "
            "p.current_version_id AS p_current, v.* "
            "FROM pipelines p JOIN pipeline_versions v ON v.pipeline_id = p.id "
            "WHERE p.project_id = :project AND p.name = :name AND v.hash = :hash"
        )
        args = {"project": project_id, "name": name, "hash": hash}
        with self._db.read() as conn:
            rows = conn.execute(find, args)
        if not rows:
            now = time.time()
            with self._db.write() as conn:
                conn.execute(
                    "INSERT INTO pipelines (id, project_id, name, created_at) "
                    "VALUES (:id, :project, :name, :at) ON CONFLICT (project_id, name) DO NOTHING",
                    {"id": new_id(), "project": project_id, "name": name, "at": now},
                )
                pid = conn.execute(
                    "SELECT id FROM pipelines WHERE project_id = :project AND name = :name",
                    {"project": project_id, "name": name},
                )[0]["id"]
                conn.execute(
                    "INSERT INTO pipeline_versions (id, pipeline_id, hash, spec, source, "
                    "created_at) VALUES (:id, :pid, :hash, :spec, :source, :at) "
                    "ON CONFLICT (pipeline_id, hash) DO NOTHING",
                    {
                        "id": new_id(),
                        "pid": pid,
                        "hash": hash,
                        "spec": json.dumps(spec, sort_keys=True),
                        "source": source,
                        "at": now,
                    },
                )
                rows = conn.execute(find, args)
        row = rows[0]
        pipeline = PipelineRecord(
            row["p_id"], row["project_id"], row["name"], row["p_created_at"], row["p_current"]
        )
        return pipeline, _version(row)

    def get_version(self, version_id: str) -> tuple[PipelineRecord, PipelineVersionRecord]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM pipeline_versions WHERE id = :id", {"id": version_id}
            )
            if not rows:
                raise NotFoundError(f"no pipeline version with id {version_id!r}")
            version = _version(rows[0])
            prow = conn.execute(
                "SELECT * FROM pipelines WHERE id = :id", {"id": version.pipeline_id}
            )[0]
        return _pipeline(prow), version

    def latest_version(
        self, project_id: str, name: str
    ) -> tuple[PipelineRecord, PipelineVersionRecord]:
        """The version of pipeline `name` that submitted runs execute: the current one if
        a deploy or a rollback set it, else the newest."""
        pipeline = self._pipeline_named(project_id, name)
        if pipeline.current_version_id is not None:
            return self.get_version(pipeline.current_version_id)
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT id FROM pipeline_versions WHERE pipeline_id = :pid "
                "ORDER BY created_at DESC, id LIMIT 1",
                {"pid": pipeline.id},
            )
        return self.get_version(rows[0]["id"])

    def set_current(self, project_id: str, name: str, version_id: str) -> PipelineRecord:
        """Make `version_id` the version of pipeline `name` that submitted runs execute."""
        pipeline = self._pipeline_named(project_id, name)
        with self._db.write() as conn:
            found = conn.execute(
                "SELECT 1 FROM pipeline_versions WHERE id = :v AND pipeline_id = :p",
                {"v": version_id, "p": pipeline.id},
            )
            if not found:
                raise NotFoundError(f"pipeline {name!r} has no version {version_id!r}")
            conn.execute(
                "UPDATE pipelines SET current_version_id = :v WHERE id = :p",
                {"v": version_id, "p": pipeline.id},
            )
        return dataclasses.replace(pipeline, current_version_id=version_id)

    def list_versions(self, project_id: str, name: str) -> list[PipelineVersionRecord]:
        """Every version of pipeline `name` in the project, oldest first."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT v.* FROM pipeline_versions v JOIN pipelines p ON p.id = v.pipeline_id "
                "WHERE p.project_id = :project AND p.name = :name ORDER BY v.created_at, v.id",
                {"project": project_id, "name": name},
            )
        if not rows:
            self._pipeline_named(project_id, name)
        return [_version(r) for r in rows]

    def _pipeline_named(self, project_id: str, name: str) -> PipelineRecord:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM pipelines WHERE project_id = :project AND name = :name",
                {"project": project_id, "name": name},
            )
        if not rows:
            raise NotFoundError(
                f"no pipeline named {name!r}",
                "a pipeline appears once it has run (`treadle run FILE`) or been deployed "
                "(`treadle pipeline deploy PACKAGE`)",
            )
        return _pipeline(rows[0])

    def list_pipelines(self, project_id: str) -> list[PipelineRecord]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM pipelines WHERE project_id = :project ORDER BY name",
                {"project": project_id},
            )
        return [_pipeline(r) for r in rows]
