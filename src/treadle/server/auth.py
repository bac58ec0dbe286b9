"""Who is calling, and what they may do: the one choke point of every API route.

Tokens are `trd_` + 32 random bytes; only their sha256 is stored. A request without a
valid token gets 401. Inside a project, roles rank viewer < editor < owner; a server
admin counts as owner everywhere. Someone who is not a member of a project gets 404 for
everything in it, exactly as if it did not exist, so projects cannot be discovered.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import time
from collections.abc import Callable

from fastapi import Depends, Request

from treadle.errors import NotFoundError, TreadleError
from treadle.store import Store
from treadle.store.records import ProjectRecord, UserRecord

TOKEN_PREFIX = "trd_"
RANK = {"viewer": 1, "editor": 2, "owner": 3}


class Unauthorized(TreadleError):
    http_status = 401
    default_hint = "send `Authorization: Bearer <token>`; `treadle up` prints the first one"


class Forbidden(TreadleError):
    http_status = 403


def new_token() -> tuple[str, str, str]:
    """A fresh token: (secret to show once, its sha256 to store, a prefix to recognise it)."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return secret, hash_token(secret), secret[:12]


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue_token(
    store: Store, user: UserRecord, name: str, expires_in_days: float | None = None
) -> tuple[str, str]:
    """Create a token for `user`; returns (token id, secret). The secret is not kept."""
    secret, digest, prefix = new_token()
    expires = time.time() + expires_in_days * 86400 if expires_in_days else None
    record = store.auth.add_token(user.id, name, digest, prefix, expires)
    return record.id, secret


@dataclasses.dataclass(frozen=True)
class Principal:
    user: UserRecord
    token_id: str

    @property
    def name(self) -> str:
        return self.user.name


@dataclasses.dataclass(frozen=True)
class Access:
    """A caller inside one project, with their role there."""

    principal: Principal
    project: ProjectRecord
    role: str

    @property
    def user(self) -> str:
        return self.principal.name


def store_of(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def authenticate(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.startswith(TOKEN_PREFIX):
        raise Unauthorized("this endpoint needs a token")
    return principal_of_hash(store_of(request), hash_token(secret.strip()))


def principal_of_hash(store: Store, digest: str) -> Principal:
    """Whose token hashes to `digest`, if it is usable now: the one check of a token,
    for bearer tokens and for the dashboard's sessions alike."""
    found = store.auth.find_token(digest)
    if found is None:
        raise Unauthorized("the token is not valid")
    token, user = found
    if not token.usable(time.time()):
        raise Unauthorized("the token has expired or was revoked", "create a new token")
    if user.disabled:
        raise Unauthorized(f"user {user.name!r} is disabled", "ask a server admin")
    return Principal(user, token.id)


def require_admin(principal: Principal = Depends(authenticate)) -> Principal:
    if not principal.user.is_admin:
        raise Forbidden("only a server admin may do this")
    return principal


def need(role: str) -> Callable[..., Access]:
    """A dependency: the caller must hold at least `role` in the `{project}` of the path."""
    wanted = RANK[role]

    def check(
        project: str, request: Request, principal: Principal = Depends(authenticate)
    ) -> Access:
        store = store_of(request)
        try:
            record = store.projects.get_project(project)
        except NotFoundError:
            raise NotFoundError(f"no project {project!r}") from None
        if principal.user.is_admin:
            return Access(principal, record, "owner")
        held = store.auth.role_of(record.id, principal.user.id)
        if held is None:  # not a member: the project does not exist for them
            raise NotFoundError(f"no project {project!r}")
        if RANK[held] < wanted:
            raise Forbidden(
                f"this needs the {role} role in {project!r}; you are {held}",
                "ask an owner of the project",
            )
        return Access(principal, record, held)

    return check
