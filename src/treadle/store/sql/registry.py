"""The model registry: models, their numbered versions, aliases and the aliases' history."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any

from treadle.errors import InvalidInputError, NotFoundError
from treadle.store.db import Connection, Database, Row
from treadle.store.records import (
    AliasEventRecord,
    AliasRecord,
    ModelVersionRecord,
    RegisteredModelRecord,
    new_id,
)
from treadle.store.sql.common import NAME_LIMIT, check_length, ensure_row, lock_row, to_json

# Aliases start with a letter so that `model@3` always means version 3, never an alias.
_ALIAS = re.compile(r"[a-z][a-z0-9_-]{0,63}")
FLAVOR_LIMIT = 64
SHA_LIMIT = 64

_MODELS_HINT = "list them with `treadle models list`"

_SELECT_ALIAS = (
    "SELECT a.model_id, a.alias, a.version_id, v.version, a.updated_at, a.updated_by "
    "FROM model_aliases a JOIN model_versions v ON v.id = a.version_id"
)


def check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS.fullmatch(alias):
        raise InvalidInputError(
            f"{alias!r} is not a valid alias",
            "an alias starts with a lowercase letter, then up to 63 lowercase letters, digits, "
            "'-' or '_' (e.g. prod, staging, canary-2)",
        )
    return alias


def _model(row: Row) -> RegisteredModelRecord:
    return RegisteredModelRecord(
        id=row["id"],
        project_id=row["project_id"],
        name=row["name"],
        description=row["description"],
        created_at=row["created_at"],
        created_by=row["created_by"],
    )


def _version(row: Row) -> ModelVersionRecord:
    return ModelVersionRecord(
        id=row["id"],
        model_id=row["model_id"],
        version=int(row["version"]),
        flavor=row["flavor"],
        manifest_sha=row["manifest_sha"],
        signature=json.loads(row["signature"]),
        metrics={k: float(v) for k, v in json.loads(row["metrics"]).items()},
        run_id=row["run_id"],
        step_run_id=row["step_run_id"],
        trusted=bool(row["trusted"]),
        created_at=row["created_at"],
        created_by=row["created_by"],
        description=row["description"],
    )


def _alias(row: Row) -> AliasRecord:
    return AliasRecord(
        model_id=row["model_id"],
        alias=row["alias"],
        version_id=row["version_id"],
        version=int(row["version"]),
        updated_at=row["updated_at"],
        updated_by=row["updated_by"],
    )


def _event(row: Row) -> AliasEventRecord:
    return AliasEventRecord(
        id=int(row["id"]),
        model_id=row["model_id"],
        alias=row["alias"],
        from_version=None if row["from_version"] is None else int(row["from_version"]),
        to_version=None if row["to_version"] is None else int(row["to_version"]),
        at=row["created_at"],
        by=row["created_by"],
        reason=row["reason"],
    )


def _model_row(conn: Connection, model_id: str) -> Row:
    rows = conn.execute("SELECT * FROM registered_models WHERE id = :id", {"id": model_id})
    if not rows:
        raise NotFoundError(f"no registered model with id {model_id!r}", _MODELS_HINT)
    return rows[0]


def _show_hint(model_name: str) -> str:
    return f"see its versions and aliases with `treadle models show {model_name}`"


class SqlModelRegistryStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def ensure_model(self, project_id: str, name: str, user: str) -> RegisteredModelRecord:
        check_length(name, NAME_LIMIT, "model name")
        args = {"project": project_id, "name": name}
        return _model(
            ensure_row(
                self._db,
                "SELECT * FROM registered_models WHERE project_id = :project AND name = :name",
                args,
                "INSERT INTO registered_models (id, project_id, name, description, created_at, "
                "created_by) VALUES (:id, :project, :name, '', :at, :user) "
                "ON CONFLICT (project_id, name) DO NOTHING",
                {**args, "id": new_id(), "at": time.time(), "user": user},
            )
        )

    def get_model(self, project_id: str, name: str) -> RegisteredModelRecord:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM registered_models WHERE project_id = :project AND name = :name",
                {"project": project_id, "name": name},
            )
        if not rows:
            raise NotFoundError(f"no registered model named {name!r}", _MODELS_HINT)
        return _model(rows[0])

    def list_models(self, project_id: str) -> list[RegisteredModelRecord]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM registered_models WHERE project_id = :project ORDER BY name",
                {"project": project_id},
            )
        return [_model(r) for r in rows]

    def add_version(
        self,
        model_id: str,
        *,
        flavor: str,
        manifest_sha: str,
        signature: Mapping[str, Any],
        metrics: Mapping[str, float],
        run_id: str | None,
        step_run_id: str | None,
        trusted: bool,
        user: str,
        description: str = "",
    ) -> ModelVersionRecord:
        """Register the model's next version: 1 for the first, then one more than the last,
        however many writers register at once."""
        check_length(flavor, FLAVOR_LIMIT, "model flavor")
        check_length(manifest_sha, SHA_LIMIT, "manifest sha")
        try:
            metric_values = {str(k): float(v) for k, v in metrics.items()}
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"model metrics must be numbers: {exc}", "give metrics as {name: float}"
            ) from exc
        values: dict[str, Any] = {
            "id": new_id(),
            "model_id": model_id,
            "flavor": flavor,
            "manifest_sha": manifest_sha,
            "signature": to_json(dict(signature), "model signature"),
            "metrics": to_json(metric_values, "model metrics"),
            "run_id": run_id,
            "step_run_id": step_run_id,
            "trusted": bool(trusted),
            "description": description,
            "created_at": time.time(),
            "created_by": user,
        }
        with self._db.write() as conn:
            if lock_row(conn, self._db.dialect, "registered_models", model_id) is None:
                raise NotFoundError(f"no registered model with id {model_id!r}", _MODELS_HINT)
            if run_id is not None and not conn.execute(
                "SELECT id FROM runs WHERE id = :id", {"id": run_id}
            ):
                raise NotFoundError(
                    f"no run with id {run_id!r} to register a model from",
                    "list them with `treadle runs list`",
                )
            values["version"] = conn.execute(
                "SELECT COALESCE(MAX(version), 0) + 1 AS next FROM model_versions "
                "WHERE model_id = :model_id",
                {"model_id": model_id},
            )[0]["next"]
            conn.execute(
                "INSERT INTO model_versions (id, model_id, version, flavor, manifest_sha, "
                "signature, metrics, run_id, step_run_id, trusted, description, created_at, "
                "created_by) VALUES (:id, :model_id, :version, :flavor, :manifest_sha, "
                ":signature, :metrics, :run_id, :step_run_id, :trusted, :description, "
                ":created_at, :created_by)",
                values,
            )
        return _version(values)

    def get_version(self, model_id: str, version: int) -> ModelVersionRecord:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM model_versions WHERE model_id = :model AND version = :version",
                {"model": model_id, "version": int(version)},
            )
            if not rows:
                name = _model_row(conn, model_id)["name"]
                raise NotFoundError(f"model {name!r} has no version {version}", _show_hint(name))
        return _version(rows[0])

    def get_version_by_id(self, version_id: str) -> ModelVersionRecord:
        with self._db.read() as conn:
            rows = conn.execute("SELECT * FROM model_versions WHERE id = :id", {"id": version_id})
        if not rows:
            raise NotFoundError(f"no model version with id {version_id!r}", _MODELS_HINT)
        return _version(rows[0])

    def list_versions(self, model_id: str) -> list[ModelVersionRecord]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM model_versions WHERE model_id = :model ORDER BY version",
                {"model": model_id},
            )
        return [_version(r) for r in rows]

    def set_trusted(self, version_id: str, trusted: bool) -> ModelVersionRecord:
        with self._db.write() as conn:
            rows = conn.execute(
                "UPDATE model_versions SET trusted = :trusted WHERE id = :id RETURNING *",
                {"trusted": bool(trusted), "id": version_id},
            )
        if not rows:
            raise NotFoundError(f"no model version with id {version_id!r}", _MODELS_HINT)
        return _version(rows[0])

    def set_alias(
        self, model_id: str, alias: str, version_id: str, *, user: str, reason: str
    ) -> AliasRecord:
        """Point `alias` at a version of the model, recording the move; pointing it where it
        already points changes nothing and records nothing."""
        check_alias(alias)
        now = time.time()
        key = {"model": model_id, "alias": alias}
        with self._db.write() as conn:
            # Holding the model row orders concurrent moves, so each event's from_version
            # is the version the alias really left.
            model = lock_row(conn, self._db.dialect, "registered_models", model_id)
            if model is None:
                raise NotFoundError(f"no registered model with id {model_id!r}", _MODELS_HINT)
            target = conn.execute(
                "SELECT model_id, version FROM model_versions WHERE id = :id", {"id": version_id}
            )
            if not target:
                raise NotFoundError(
                    f"no model version with id {version_id!r}", _show_hint(model["name"])
                )
            if target[0]["model_id"] != model_id:
                raise InvalidInputError(
                    f"version {version_id!r} belongs to another model, not {model['name']!r}",
                    "an alias can only point at a version of its own model",
                )
            current = conn.execute(
                f"{_SELECT_ALIAS} WHERE a.model_id = :model AND a.alias = :alias", key
            )
            if current and current[0]["version_id"] == version_id:
                return _alias(current[0])
            change = {**key, "version_id": version_id, "at": now, "user": user}
            if current:
                conn.execute(
                    "UPDATE model_aliases SET version_id = :version_id, updated_at = :at, "
                    "updated_by = :user WHERE model_id = :model AND alias = :alias",
                    change,
                )
            else:
                conn.execute(
                    "INSERT INTO model_aliases (model_id, alias, version_id, updated_at, "
                    "updated_by) VALUES (:model, :alias, :version_id, :at, :user)",
                    change,
                )
            to_version = int(target[0]["version"])
            _record_event(
                conn,
                model_id,
                alias,
                int(current[0]["version"]) if current else None,
                to_version,
                at=now,
                user=user,
                reason=reason,
            )
        return AliasRecord(model_id, alias, version_id, to_version, now, user)

    def delete_alias(self, model_id: str, alias: str, *, user: str, reason: str) -> None:
        key = {"model": model_id, "alias": alias}
        with self._db.write() as conn:
            model = lock_row(conn, self._db.dialect, "registered_models", model_id)
            if model is None:
                raise NotFoundError(f"no registered model with id {model_id!r}", _MODELS_HINT)
            current = conn.execute(
                f"{_SELECT_ALIAS} WHERE a.model_id = :model AND a.alias = :alias", key
            )
            if not current:
                raise NotFoundError(
                    f"model {model['name']!r} has no alias {alias!r}", _show_hint(model["name"])
                )
            conn.execute(
                "DELETE FROM model_aliases WHERE model_id = :model AND alias = :alias", key
            )
            _record_event(
                conn,
                model_id,
                alias,
                int(current[0]["version"]),
                None,
                at=time.time(),
                user=user,
                reason=reason,
            )

    def get_alias(self, model_id: str, alias: str) -> AliasRecord:
        with self._db.read() as conn:
            rows = conn.execute(
                f"{_SELECT_ALIAS} WHERE a.model_id = :model AND a.alias = :alias",
                {"model": model_id, "alias": alias},
            )
            if not rows:
                name = _model_row(conn, model_id)["name"]
                raise NotFoundError(f"model {name!r} has no alias {alias!r}", _show_hint(name))
        return _alias(rows[0])

    def list_aliases(self, model_id: str) -> list[AliasRecord]:
        with self._db.read() as conn:
            rows = conn.execute(
                f"{_SELECT_ALIAS} WHERE a.model_id = :model ORDER BY a.alias",
                {"model": model_id},
            )
        return [_alias(r) for r in rows]

    def alias_history(self, model_id: str, alias: str | None = None) -> list[AliasEventRecord]:
        query = "SELECT * FROM alias_events WHERE model_id = :model"
        args = {"model": model_id}
        if alias is not None:
            query += " AND alias = :alias"
            args["alias"] = alias
        with self._db.read() as conn:
            rows = conn.execute(query + " ORDER BY id", args)
        return [_event(r) for r in rows]


def _record_event(
    conn: Connection,
    model_id: str,
    alias: str,
    from_version: int | None,
    to_version: int | None,
    *,
    at: float,
    user: str,
    reason: str,
) -> None:
    conn.execute(
        "INSERT INTO alias_events (model_id, alias, from_version, to_version, created_at, "
        "created_by, reason) VALUES (:model, :alias, :from_version, :to_version, :at, :user, "
        ":reason)",
        {
            "model": model_id,
            "alias": alias,
            "from_version": from_version,
            "to_version": to_version,
            "at": at,
            "user": user,
            "reason": reason,
        },
    )
