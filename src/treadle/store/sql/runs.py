"""Runs and step runs: their states, attempts and the cache lookup."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from treadle.errors import NotFoundError
from treadle.store.db import Database
from treadle.store.records import ArtifactRecord, LineageEdge, RunRecord, StepRunRecord
from treadle.store.sql.common import (
    INSERT_STEP,
    RUN_FIELDS,
    insert_artifacts,
    insert_edges,
    resolve_id,
    run_from_row,
    step_params,
    step_run_from_row,
)
from treadle.types import RunState, StepState


class SqlRunStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def create_run(self, run: RunRecord) -> None:
        values = {f: getattr(run, f) for f in RUN_FIELDS}
        values["state"] = run.state.value
        values["cause"] = json.dumps(run.cause, sort_keys=True) if run.cause else None
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO runs (id, project_id, experiment_id, pipeline_version_id, name, "
                "state, created_by, executor, attempt, created_at, started_at, ended_at, error, "
                "heartbeat_at, cause) VALUES (:id, :project_id, :experiment_id, "
                ":pipeline_version_id, :name, :state, :created_by, :executor, :attempt, "
                ":created_at, :started_at, :ended_at, :error, :heartbeat_at, :cause)",
                values,
            )

    def set_run_state(
        self,
        run_id: str,
        state: RunState,
        *,
        at: float,
        error: str | None = None,
        restart: bool = False,
    ) -> RunRecord:
        """Move a run to `state`. `restart` marks a resume: attempt + 1, end time cleared."""
        with self._db.write() as conn:
            if restart:
                conn.execute(
                    "UPDATE runs SET state = :state, attempt = attempt + 1, ended_at = NULL, "
                    "error = NULL, started_at = COALESCE(started_at, :at), heartbeat_at = :at "
                    "WHERE id = :id",
                    {"state": state.value, "at": at, "id": run_id},
                )
            elif state is RunState.RUNNING:
                conn.execute(
                    "UPDATE runs SET state = :state, started_at = :at, heartbeat_at = :at "
                    "WHERE id = :id",
                    {"state": state.value, "at": at, "id": run_id},
                )
            else:
                conn.execute(
                    "UPDATE runs SET state = :state, ended_at = :at, error = :error WHERE id = :id",
                    {"state": state.value, "at": at, "error": error, "id": run_id},
                )
            rows = conn.execute("SELECT * FROM runs WHERE id = :id", {"id": run_id})
        if not rows:
            raise NotFoundError(f"no run with id {run_id!r}")
        return run_from_row(rows[0])

    def heartbeat(self, run_id: str, at: float) -> None:
        """The executor is alive and the run still RUNNING."""
        with self._db.write() as conn:
            conn.execute(
                "UPDATE runs SET heartbeat_at = :at WHERE id = :id AND state = 'RUNNING'",
                {"at": at, "id": run_id},
            )

    def fail_stale(self, silent_since: float, at: float) -> list[RunRecord]:
        """Runs still RUNNING whose executor has not been heard from since `silent_since`
        are FAILED (and their running steps with them), so they can be resumed."""
        with self._db.write() as conn:
            rows = conn.execute(
                "SELECT * FROM runs WHERE state = 'RUNNING' "
                "AND COALESCE(heartbeat_at, started_at, created_at) < :since",
                {"since": silent_since},
            )
            for row in rows:
                message = (
                    "the process executing this run stopped (no heartbeat since "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(silent_since))}); "
                    "resume it to finish"
                )
                conn.execute(
                    "UPDATE step_runs SET state = 'FAILED', ended_at = :at, "
                    "error = 'the process executing it stopped' "
                    "WHERE run_id = :id AND state = 'RUNNING'",
                    {"at": at, "id": row["id"]},
                )
                conn.execute(
                    "UPDATE runs SET state = 'FAILED', ended_at = :at, error = :error "
                    "WHERE id = :id AND state = 'RUNNING'",
                    {"at": at, "error": message, "id": row["id"]},
                )
            ids = [r["id"] for r in rows]
        return [self.get_run(i) for i in ids]

    def get_run(self, run_id: str, project_id: str | None = None) -> RunRecord:
        with self._db.read() as conn:
            if project_id is None:
                row = resolve_id(conn, "runs", "run", run_id)
            else:
                row = resolve_id(
                    conn, "runs", "run", run_id, "project_id = :project", {"project": project_id}
                )
        return run_from_row(row)

    def list_runs(
        self,
        project_id: str,
        *,
        experiment_id: str | None = None,
        state: RunState | None = None,
        pipeline_version_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunRecord]:
        where = ["project_id = :project"]
        if pipeline_version_id is not None:
            where.append("pipeline_version_id = :version")
        args: dict[str, Any] = {
            "project": project_id,
            "version": pipeline_version_id,
            "limit": limit,
            "offset": offset,
        }
        if experiment_id is not None:
            where.append("experiment_id = :experiment")
            args["experiment"] = experiment_id
        if state is not None:
            where.append("state = :state")
            args["state"] = state.value
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT * FROM runs WHERE {' AND '.join(where)} "
                "ORDER BY created_at DESC, id DESC LIMIT :limit OFFSET :offset",
                args,
            )
        return [run_from_row(r) for r in rows]

    def start_step(self, step_run: StepRunRecord) -> None:
        with self._db.write() as conn:
            conn.execute(INSERT_STEP, step_params(step_run))

    def finish_step(
        self,
        step_run_id: str,
        state: StepState,
        *,
        at: float,
        error: str | None = None,
        log_uri: str | None = None,
        artifacts: Sequence[ArtifactRecord] = (),
        edges: Sequence[LineageEdge] = (),
    ) -> bool:
        """End a RUNNING step run; False (and nothing written) if it had already ended,
        e.g. a worker finishing after the runner recorded its timeout."""
        with self._db.write() as conn:
            updated = conn.execute(
                "UPDATE step_runs SET state = :state, ended_at = :at, error = :error, "
                "log_uri = :log_uri WHERE id = :id AND state = 'RUNNING' RETURNING id",
                {
                    "state": state.value,
                    "at": at,
                    "error": error,
                    "log_uri": log_uri,
                    "id": step_run_id,
                },
            )
            if not updated:
                return False
            insert_artifacts(conn, artifacts)
            insert_edges(conn, edges)
        return True

    def add_step(self, step_run: StepRunRecord, edges: Sequence[LineageEdge] = ()) -> None:
        """Record a step run that is already over (a cache hit, a skip, a timeout)."""
        with self._db.write() as conn:
            conn.execute(INSERT_STEP, step_params(step_run))
            insert_edges(conn, edges)

    def list_steps(self, run_id: str) -> list[StepRunRecord]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM step_runs WHERE run_id = :run ORDER BY started_at, attempt",
                {"run": run_id},
            )
        return [step_run_from_row(r) for r in rows]

    def get_step(self, step_run_id: str) -> StepRunRecord:
        with self._db.read() as conn:
            rows = conn.execute("SELECT * FROM step_runs WHERE id = :id", {"id": step_run_id})
        if not rows:
            raise NotFoundError(f"no step run with id {step_run_id!r}")
        return step_run_from_row(rows[0])

    def find_cached(self, project_id: str, cache_key: str) -> StepRunRecord | None:
        """The newest step run that computed `cache_key` itself and succeeded."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM step_runs WHERE project_id = :project AND cache_key = :key "
                "AND state = 'SUCCEEDED' ORDER BY ended_at DESC LIMIT 1",
                {"project": project_id, "key": cache_key},
            )
        return step_run_from_row(rows[0]) if rows else None
