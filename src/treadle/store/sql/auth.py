"""Users, API tokens (stored as sha256 only), project members and their roles, and the
audit log of every change."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from treadle.errors import ConflictError, InvalidInputError, NotFoundError
from treadle.store.db import Database, Row
from treadle.store.records import AuditRecord, MemberRecord, TokenRecord, UserRecord, new_id
from treadle.store.sql.common import NAME_LIMIT, check_length

ROLES = ("viewer", "editor", "owner")


def _user(row: Row) -> UserRecord:
    return UserRecord(
        row["id"], row["name"], bool(row["is_admin"]), row["created_at"], bool(row["disabled"])
    )


def _token(row: Row) -> TokenRecord:
    return TokenRecord(
        row["id"],
        row["user_id"],
        row["name"],
        row["prefix"],
        row["created_at"],
        row["expires_at"],
        row["revoked_at"],
    )


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidInputError(f"unknown role {role!r}", f"use one of {', '.join(ROLES)}")
    return role


class SqlAuthStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- users --------------------------------------------------------------------------

    def create_user(self, name: str, *, is_admin: bool = False) -> UserRecord:
        check_length(name, NAME_LIMIT, "user name")
        with self._db.write() as conn:
            # ON CONFLICT: a writer racing for the same name (another server on the same
            # database) gets the conflict, not a driver's integrity error
            rows = conn.execute(
                "INSERT INTO users (id, name, is_admin, disabled, created_at) "
                "VALUES (:id, :name, :admin, :disabled, :at) "
                "ON CONFLICT (name) DO NOTHING RETURNING *",
                {
                    "id": new_id(),
                    "name": name,
                    "admin": is_admin,
                    "disabled": False,
                    "at": time.time(),
                },
            )
        if not rows:
            raise ConflictError(f"user {name!r} exists", "choose another name")
        return _user(rows[0])

    def get_user(self, name: str) -> UserRecord:
        with self._db.read() as conn:
            rows = conn.execute("SELECT * FROM users WHERE name = :name", {"name": name})
        if not rows:
            raise NotFoundError(f"no user {name!r}", "list them with `treadle users list`")
        return _user(rows[0])

    def get_user_by_id(self, user_id: str) -> UserRecord:
        with self._db.read() as conn:
            rows = conn.execute("SELECT * FROM users WHERE id = :id", {"id": user_id})
        if not rows:
            raise NotFoundError(f"no user with id {user_id!r}")
        return _user(rows[0])

    def list_users(self) -> list[UserRecord]:
        with self._db.read() as conn:
            return [_user(r) for r in conn.execute("SELECT * FROM users ORDER BY name")]

    def set_disabled(self, user_id: str, disabled: bool) -> UserRecord:
        with self._db.write() as conn:
            conn.execute(
                "UPDATE users SET disabled = :d WHERE id = :id", {"d": disabled, "id": user_id}
            )
        return self.get_user_by_id(user_id)

    # -- tokens -------------------------------------------------------------------------

    def add_token(
        self, user_id: str, name: str, token_hash: str, prefix: str, expires_at: float | None
    ) -> TokenRecord:
        check_length(name, NAME_LIMIT, "token name")
        token_id = new_id()
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO tokens (id, user_id, name, prefix, hash, created_at, expires_at, "
                "revoked_at) VALUES (:id, :user, :name, :prefix, :hash, :at, :expires, NULL)",
                {
                    "id": token_id,
                    "user": user_id,
                    "name": name,
                    "prefix": prefix,
                    "hash": token_hash,
                    "at": time.time(),
                    "expires": expires_at,
                },
            )
            row = conn.execute("SELECT * FROM tokens WHERE id = :id", {"id": token_id})[0]
        return _token(row)

    def find_token(self, token_hash: str) -> tuple[TokenRecord, UserRecord] | None:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT t.*, u.name AS u_name, u.is_admin AS u_admin, u.disabled AS u_disabled, "
                "u.created_at AS u_created FROM tokens t JOIN users u ON u.id = t.user_id "
                "WHERE t.hash = :hash",
                {"hash": token_hash},
            )
        if not rows:
            return None
        r = rows[0]
        user = UserRecord(
            r["user_id"], r["u_name"], bool(r["u_admin"]), r["u_created"], bool(r["u_disabled"])
        )
        return _token(r), user

    def list_tokens(self, user_id: str) -> list[TokenRecord]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM tokens WHERE user_id = :user ORDER BY created_at", {"user": user_id}
            )
        return [_token(r) for r in rows]

    def revoke_token(self, user_id: str, token_id: str) -> TokenRecord:
        with self._db.write() as conn:
            rows = conn.execute(
                "SELECT * FROM tokens WHERE id = :id AND user_id = :user",
                {"id": token_id, "user": user_id},
            )
            if not rows:
                raise NotFoundError(f"no token {token_id!r}", "list your tokens first")
            conn.execute(
                "UPDATE tokens SET revoked_at = :at WHERE id = :id AND revoked_at IS NULL",
                {"at": time.time(), "id": token_id},
            )
            row = conn.execute("SELECT * FROM tokens WHERE id = :id", {"id": token_id})[0]
        return _token(row)

    # -- members ------------------------------------------------------------------------

    def set_member(self, project_id: str, user_id: str, role: str) -> MemberRecord:
        check_role(role)
        with self._db.write() as conn:
            updated = conn.execute(
                "UPDATE members SET role = :role WHERE project_id = :p AND user_id = :u "
                "RETURNING user_id",
                {"role": role, "p": project_id, "u": user_id},
            )
            if not updated:
                conn.execute(
                    "INSERT INTO members (project_id, user_id, role, created_at) "
                    "VALUES (:p, :u, :role, :at)",
                    {"p": project_id, "u": user_id, "role": role, "at": time.time()},
                )
        return next(m for m in self.list_members(project_id) if m.user_id == user_id)

    def remove_member(self, project_id: str, user_id: str) -> None:
        with self._db.write() as conn:
            gone = conn.execute(
                "DELETE FROM members WHERE project_id = :p AND user_id = :u RETURNING user_id",
                {"p": project_id, "u": user_id},
            )
        if not gone:
            raise NotFoundError("that user is not a member of the project")

    def list_members(self, project_id: str) -> list[MemberRecord]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT m.*, u.name AS user_name FROM members m JOIN users u ON u.id = m.user_id "
                "WHERE m.project_id = :p ORDER BY u.name",
                {"p": project_id},
            )
        return [
            MemberRecord(r["project_id"], r["user_id"], r["user_name"], r["role"], r["created_at"])
            for r in rows
        ]

    def role_of(self, project_id: str, user_id: str) -> str | None:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT role FROM members WHERE project_id = :p AND user_id = :u",
                {"p": project_id, "u": user_id},
            )
        return str(rows[0]["role"]) if rows else None

    def projects_of(self, user_id: str) -> dict[str, str]:
        """Project id -> role, for every project the user is a member of."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT project_id, role FROM members WHERE user_id = :u", {"u": user_id}
            )
        return {r["project_id"]: r["role"] for r in rows}


class SqlAuditStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def record(
        self,
        project_id: str | None,
        user: str,
        action: str,
        target_type: str,
        target_id: str,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO audit_events (project_id, user_name, action, target_type, target_id, "
                "detail, created_at) VALUES (:p, :u, :a, :tt, :ti, :d, :at)",
                {
                    "p": project_id,
                    "u": user,
                    "a": action,
                    "tt": target_type,
                    "ti": target_id,
                    "d": json.dumps(dict(detail or {}), sort_keys=True, default=str),
                    "at": time.time(),
                },
            )

    def list(
        self, project_id: str | None, *, limit: int = 100, offset: int = 0
    ) -> list[AuditRecord]:
        where = "project_id = :p" if project_id is not None else "project_id IS NULL"
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT * FROM audit_events WHERE {where} ORDER BY id DESC "
                "LIMIT :limit OFFSET :offset",
                {"p": project_id, "limit": limit, "offset": offset},
            )
        return [
            AuditRecord(
                int(r["id"]),
                r["project_id"],
                r["user_name"],
                r["action"],
                r["target_type"],
                r["target_id"],
                json.loads(r["detail"]),
                r["created_at"],
            )
            for r in rows
        ]
