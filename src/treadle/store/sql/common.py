"""Helpers shared by the SQL store modules: id prefixes and row conversion."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from treadle.errors import InvalidInputError, NotFoundError
from treadle.store.db import Connection, Database, Row
from treadle.store.records import ArtifactRecord, LineageEdge, RunRecord, StepRunRecord
from treadle.types import RunState, StepState

MIN_PREFIX = 4
NAME_LIMIT = 200
KEY_LIMIT = 250


def check_length(value: str, limit: int, what: str) -> str:
    """Refuse over-long names the same way on every backend (SQLite would store them)."""
    if not value or len(value) > limit:
        raise InvalidInputError(
            f"{what} must be 1 to {limit} characters, got {len(value)}: {value[:40]!r}..."
            if value
            else f"{what} must not be empty"
        )
    return value


def to_json(value: Any, what: str) -> str:
    """JSON text for a column; a value JSON cannot hold is the caller's mistake."""
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"{what} cannot be stored as JSON: {exc}",
            "use only dicts, lists, strings, numbers, booleans and None",
        ) from exc


def lock_row(conn: Connection, dialect: str, table: str, row_id: str) -> Row | None:
    """Read one row by id inside a write transaction, holding it until the transaction ends,
    so writers that derive the next number from it queue instead of racing. SQLite needs no
    row lock: its BEGIN IMMEDIATE already gave this writer the whole database."""
    lock = "" if dialect == "sqlite" else " FOR UPDATE"
    rows = conn.execute(f"SELECT * FROM {table} WHERE id = :id{lock}", {"id": row_id})
    return rows[0] if rows else None


RUN_FIELDS = tuple(RunRecord.__dataclass_fields__)
STEP_FIELDS = tuple(StepRunRecord.__dataclass_fields__)


def run_from_row(row: Row) -> RunRecord:
    values: dict[str, Any] = {f: row[f] for f in RUN_FIELDS}
    values["state"] = RunState(values["state"])
    values["cause"] = json.loads(values["cause"]) if values["cause"] else None
    return RunRecord(**values)


def step_run_from_row(row: Row) -> StepRunRecord:
    values: dict[str, Any] = {f: row[f] for f in STEP_FIELDS}
    values["state"] = StepState(values["state"])
    return StepRunRecord(**values)


def step_params(step_run: StepRunRecord) -> dict[str, Any]:
    values = {f: getattr(step_run, f) for f in STEP_FIELDS}
    values["state"] = step_run.state.value
    return values


_INSERT_ARTIFACT = (
    "INSERT INTO artifacts (id, project_id, name, kind, materializer, python_type, sha256, uri, "
    "size, created_at, run_id, producer_step_run_id) VALUES (:id, :project_id, :name, :kind, "
    ":materializer, :python_type, :sha256, :uri, :size, :created_at, :run_id, "
    ":producer_step_run_id)"
)
_INSERT_EDGE = (
    "INSERT INTO lineage (artifact_id, step_run_id, direction, name) "
    "VALUES (:artifact_id, :step_run_id, :direction, :name) ON CONFLICT DO NOTHING"
)
ARTIFACT_FIELDS = tuple(ArtifactRecord.__dataclass_fields__)
INSERT_STEP = (
    "INSERT INTO step_runs (id, run_id, project_id, node, step_name, attempt, state, cache_key, "
    "cached_from, started_at, ended_at, error, log_uri) VALUES (:id, :run_id, :project_id, "
    ":node, :step_name, :attempt, :state, :cache_key, :cached_from, :started_at, :ended_at, "
    ":error, :log_uri)"
)


def insert_artifacts(conn: Connection, artifacts: Sequence[ArtifactRecord]) -> None:
    if artifacts:
        conn.executemany(
            _INSERT_ARTIFACT,
            [{f: getattr(a, f) for f in ARTIFACT_FIELDS} for a in artifacts],
        )


def insert_edges(conn: Connection, edges: Sequence[LineageEdge]) -> None:
    if edges:
        conn.executemany(
            _INSERT_EDGE,
            [
                {
                    "artifact_id": e.artifact_id,
                    "step_run_id": e.step_run_id,
                    "direction": e.direction,
                    "name": e.name,
                }
                for e in edges
            ],
        )


def artifact_from_row(row: Row) -> ArtifactRecord:
    return ArtifactRecord(**{f: row[f] for f in ARTIFACT_FIELDS})


LIST_HINTS = {
    "run": "list them with `treadle runs list`",
    "artifact": "find the run with `treadle runs list`, then `treadle artifacts list RUN_ID`",
}


LIST_HINTS = {
    "run": "list them with `treadle runs list`",
    "artifact": "find the run with `treadle runs list`, then `treadle artifacts list RUN_ID`",
}


def ensure_row(
    db: Database, select: str, args: dict[str, Any], insert: str, values: dict[str, Any]
) -> Row:
    """The row `select` finds; if none, insert it (`ON CONFLICT DO NOTHING`, so a racing
    writer's row wins) and read it again."""
    with db.read() as conn:
        rows = conn.execute(select, args)
    if not rows:
        with db.write() as conn:
            conn.execute(insert, values)
            rows = conn.execute(select, args)
    return rows[0]


def resolve_id(
    conn: Connection,
    table: str,
    noun: str,
    given: str,
    where: str = "",
    params: dict[str, Any] | None = None,
) -> Row:
    """Find the one row of `table` whose id is `given` or starts with it (git-style)."""
    given = given.strip().lower()
    if not given or any(c not in "0123456789abcdef" for c in given):
        raise InvalidInputError(f"{given!r} is not a {noun} id", f"{noun} ids are hexadecimal")
    extra = f" AND {where}" if where else ""
    args = dict(params or {})
    if len(given) == 32:
        rows = conn.execute(f"SELECT * FROM {table} WHERE id = :id{extra}", {**args, "id": given})
    else:
        if len(given) < MIN_PREFIX:
            raise InvalidInputError(
                f"{noun} id prefix {given!r} is too short", f"give at least {MIN_PREFIX} characters"
            )
        rows = conn.execute(
            f"SELECT * FROM {table} WHERE id LIKE :prefix{extra} LIMIT 2",
            {**args, "prefix": given + "%"},
        )
    if not rows:
        raise NotFoundError(f"no {noun} with id {given!r}", LIST_HINTS.get(noun))
    if len(rows) > 1:
        raise InvalidInputError(
            f"{noun} id prefix {given!r} is ambiguous", "give more characters of the id"
        )
    return rows[0]
