"""Artifact records and the lineage edges between artifacts and step runs."""

from __future__ import annotations

from collections.abc import Sequence

from treadle.store.artifacts import SCHEME
from treadle.store.db import Database
from treadle.store.records import (
    ArtifactRecord,
    Lineage,
    LineageEdge,
    LineageEntry,
    StepRunRecord,
)
from treadle.store.sql.common import (
    ARTIFACT_FIELDS,
    artifact_from_row,
    insert_artifacts,
    insert_edges,
    resolve_id,
    step_run_from_row,
)

_STEP_COLUMNS = (
    "s.id, s.run_id, s.project_id, s.node, s.step_name, s.attempt, s.state, s.cache_key, "
    "s.cached_from, s.started_at, s.ended_at, s.error, s.log_uri"
)


class SqlArtifactCatalog:
    def __init__(self, db: Database) -> None:
        self._db = db

    def add_artifact(self, artifact: ArtifactRecord, edges: Sequence[LineageEdge] = ()) -> None:
        with self._db.write() as conn:
            insert_artifacts(conn, [artifact])
            insert_edges(conn, edges)

    def get_artifact(self, artifact_id: str, project_id: str | None = None) -> ArtifactRecord:
        with self._db.read() as conn:
            if project_id is None:
                row = resolve_id(conn, "artifacts", "artifact", artifact_id)
            else:
                row = resolve_id(
                    conn,
                    "artifacts",
                    "artifact",
                    artifact_id,
                    "project_id = :project",
                    {"project": project_id},
                )
        return artifact_from_row(row)

    def _edges_of(self, step_run_id: str, direction: str) -> dict[str, ArtifactRecord]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT l.name AS edge_name, a.* FROM lineage l "
                "JOIN artifacts a ON a.id = l.artifact_id "
                "WHERE l.step_run_id = :sr AND l.direction = :direction ORDER BY l.name",
                {"sr": step_run_id, "direction": direction},
            )
        return {r["edge_name"]: artifact_from_row(r) for r in rows}

    def step_outputs(self, step_run_id: str) -> dict[str, ArtifactRecord]:
        return self._edges_of(step_run_id, "output")

    def step_input_ids(self, step_run_id: str) -> list[str]:
        """The ids of every artifact the step run read (a joined input gives several)."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT artifact_id FROM lineage WHERE step_run_id = :sr "
                "AND direction = 'input' ORDER BY name, artifact_id",
                {"sr": step_run_id},
            )
        return [r["artifact_id"] for r in rows]

    def run_artifacts(self, run_id: str) -> list[tuple[StepRunRecord, str, ArtifactRecord]]:
        """Every artifact the run's step runs produced (or reused from the cache)."""
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT {_STEP_COLUMNS}, l.name AS edge_name, a.id AS a_id, "
                "a.project_id AS a_project_id, a.name AS a_name, a.kind AS a_kind, "
                "a.materializer AS a_materializer, a.python_type AS a_python_type, "
                "a.sha256 AS a_sha256, a.uri AS a_uri, a.size AS a_size, "
                "a.created_at AS a_created_at, a.run_id AS a_run_id, "
                "a.producer_step_run_id AS a_producer_step_run_id "
                "FROM step_runs s JOIN lineage l ON l.step_run_id = s.id "
                "JOIN artifacts a ON a.id = l.artifact_id "
                "WHERE s.run_id = :run AND l.direction = 'output' "
                "ORDER BY s.started_at, l.name",
                {"run": run_id},
            )
        return [
            (
                step_run_from_row(r),
                r["edge_name"],
                ArtifactRecord(**{f: r["a_" + f] for f in ARTIFACT_FIELDS}),
            )
            for r in rows
        ]

    def has_object(self, project_id: str, sha: str) -> bool:
        """Whether anything of the project refers to the object: an artifact, a model
        version's manifest or a step's log. Objects are shared by content across projects,
        so this is what keeps one project from reading another's bytes by their hash."""
        args = {"project": project_id, "sha": sha, "uri": f"{SCHEME}:sha256:{sha}"}
        queries = (
            "SELECT 1 FROM artifacts WHERE sha256 = :sha AND project_id = :project LIMIT 1",
            "SELECT 1 FROM model_versions v JOIN registered_models m ON m.id = v.model_id "
            "WHERE v.manifest_sha = :sha AND m.project_id = :project LIMIT 1",
            "SELECT 1 FROM step_runs WHERE log_uri = :uri AND project_id = :project LIMIT 1",
        )
        with self._db.read() as conn:
            return any(conn.execute(query, args) for query in queries)

    def lineage(self, artifact_id: str) -> Lineage:
        artifact = self.get_artifact(artifact_id)
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT {_STEP_COLUMNS}, l.direction AS edge_direction, l.name AS edge_name "
                "FROM lineage l JOIN step_runs s ON s.id = l.step_run_id "
                "WHERE l.artifact_id = :a ORDER BY s.started_at",
                {"a": artifact.id},
            )
        produced: list[LineageEntry] = []
        consumed: list[LineageEntry] = []
        for r in rows:
            entry = LineageEntry(step_run_from_row(r), r["edge_name"])
            (produced if r["edge_direction"] == "output" else consumed).append(entry)
        return Lineage(artifact=artifact, produced_by=produced, consumed_by=consumed)
