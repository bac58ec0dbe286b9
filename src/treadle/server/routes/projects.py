"""Projects, members, users and tokens."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from treadle.server.auth import (
    Access,
    Principal,
    authenticate,
    issue_token,
    need,
    require_admin,
    store_of,
)
from treadle.store.records import MemberRecord, ProjectRecord, TokenRecord, UserRecord

router = APIRouter(tags=["projects"])

NAME = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class NewProject(BaseModel):
    name: str = NAME


class NewUser(BaseModel):
    name: str = NAME
    is_admin: bool = False


class Membership(BaseModel):
    role: str = Field(pattern="^(viewer|editor|owner)$")


class NewToken(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    expires_in_days: float | None = Field(default=None, gt=0, le=3650)


class IssuedToken(BaseModel):
    id: str
    token: str
    """The secret: shown this once, stored only as a hash."""


class Me(BaseModel):
    user: UserRecord
    projects: dict[str, str]
    """Project name -> your role there."""


@router.get("/me", response_model=Me)
def me(request: Request, principal: Principal = Depends(authenticate)) -> Me:
    """Who the token belongs to and the projects it reaches."""
    store = store_of(request)
    names = {p.id: p.name for p in store.projects.list_projects()}
    if principal.user.is_admin:
        roles = {name: "owner" for name in names.values()}
    else:
        roles = {
            names[pid]: role
            for pid, role in store.auth.projects_of(principal.user.id).items()
            if pid in names
        }
    return Me(user=principal.user, projects=roles)


@router.get("/projects", response_model=list[ProjectRecord])
def list_projects(
    request: Request, principal: Principal = Depends(authenticate)
) -> list[ProjectRecord]:
    """The projects you are a member of (all of them for a server admin)."""
    store = store_of(request)
    projects = store.projects.list_projects()
    if principal.user.is_admin:
        return projects
    mine = store.auth.projects_of(principal.user.id)
    return [p for p in projects if p.id in mine]


@router.post("/projects", response_model=ProjectRecord, status_code=201)
def create_project(
    body: NewProject, request: Request, principal: Principal = Depends(require_admin)
) -> ProjectRecord:
    """Create a project (server admins); its creator becomes an owner."""
    store = store_of(request)
    project = store.projects.ensure_project(body.name, principal.name)
    store.auth.set_member(project.id, principal.user.id, "owner")
    store.audit.record(project.id, principal.name, "create", "project", project.name)
    return project


@router.get("/projects/{project}", response_model=ProjectRecord)
def get_project(access: Access = Depends(need("viewer"))) -> ProjectRecord:
    return access.project


@router.get("/projects/{project}/members", response_model=list[MemberRecord])
def list_members(request: Request, access: Access = Depends(need("viewer"))) -> list[MemberRecord]:
    return store_of(request).auth.list_members(access.project.id)


@router.put("/projects/{project}/members/{user}", response_model=MemberRecord)
def set_member(
    user: str, body: Membership, request: Request, access: Access = Depends(need("owner"))
) -> MemberRecord:
    """Add a member or change their role (owners)."""
    store = store_of(request)
    record = store.auth.set_member(access.project.id, store.auth.get_user(user).id, body.role)
    store.audit.record(
        access.project.id, access.user, "set-member", "user", user, {"role": body.role}
    )
    return record


@router.delete("/projects/{project}/members/{user}", status_code=204)
def remove_member(user: str, request: Request, access: Access = Depends(need("owner"))) -> None:
    store = store_of(request)
    store.auth.remove_member(access.project.id, store.auth.get_user(user).id)
    store.audit.record(access.project.id, access.user, "remove-member", "user", user)


@router.get("/users", response_model=list[UserRecord])
def list_users(request: Request, _: Principal = Depends(require_admin)) -> list[UserRecord]:
    return store_of(request).auth.list_users()


@router.post("/users", response_model=UserRecord, status_code=201)
def create_user(
    body: NewUser, request: Request, principal: Principal = Depends(require_admin)
) -> UserRecord:
    """Create a user (server admins). Give them a token with POST /users/{name}/tokens."""
    store = store_of(request)
    user = store.auth.create_user(body.name, is_admin=body.is_admin)
    store.audit.record(
        None, principal.name, "create", "user", user.name, {"is_admin": body.is_admin}
    )
    return user


@router.post("/users/{user}/tokens", response_model=IssuedToken, status_code=201)
def issue_user_token(
    user: str, body: NewToken, request: Request, principal: Principal = Depends(require_admin)
) -> IssuedToken:
    """Issue a token for another user (server admins); the secret is shown once."""
    store = store_of(request)
    token_id, secret = issue_token(
        store, store.auth.get_user(user), body.name, body.expires_in_days
    )
    store.audit.record(None, principal.name, "issue-token", "user", user, {"token": token_id})
    return IssuedToken(id=token_id, token=secret)


@router.get("/tokens", response_model=list[TokenRecord])
def list_tokens(
    request: Request, principal: Principal = Depends(authenticate)
) -> list[TokenRecord]:
    """Your tokens (never their secrets)."""
    return store_of(request).auth.list_tokens(principal.user.id)


@router.post("/tokens", response_model=IssuedToken, status_code=201)
def create_token(
    body: NewToken, request: Request, principal: Principal = Depends(authenticate)
) -> IssuedToken:
    """A new token for yourself; the secret is shown once."""
    store = store_of(request)
    token_id, secret = issue_token(store, principal.user, body.name, body.expires_in_days)
    store.audit.record(None, principal.name, "create-token", "token", token_id)
    return IssuedToken(id=token_id, token=secret)


@router.delete("/tokens/{token_id}", response_model=TokenRecord)
def revoke_token(
    token_id: str, request: Request, principal: Principal = Depends(authenticate)
) -> TokenRecord:
    """Revoke one of your tokens; it stops working at once."""
    store = store_of(request)
    record = store.auth.revoke_token(principal.user.id, token_id)
    store.audit.record(None, principal.name, "revoke-token", "token", token_id)
    return record
