"""Policies: the closed loop a project writes down, and each time one acted."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from treadle.loop.policy import parse
from treadle.server.auth import Access, need, store_of
from treadle.store.records import PolicyRecord, PolicyRunRecord, new_id

router = APIRouter(prefix="/projects/{project}", tags=["policies"])


class PolicyIn(BaseModel):
    spec: dict[str, Any] = Field(max_length=20)
    """The policy document (what `treadle policies apply FILE` reads from YAML)."""
    replace: bool = False
    """Change the spec of an existing policy of that name."""


class EnabledIn(BaseModel):
    enabled: bool


@router.get("/policies", response_model=list[PolicyRecord])
def list_policies(request: Request, access: Access = Depends(need("viewer"))) -> list[PolicyRecord]:
    return store_of(request).policies.list_policies(access.project.id)


@router.post("/policies", response_model=PolicyRecord, status_code=201)
def put_policy(
    body: PolicyIn, request: Request, access: Access = Depends(need("editor"))
) -> PolicyRecord:
    """Create (or, with `replace`, change) a policy. It acts on events from now on."""
    policy = parse(body.spec)  # 422 naming the field
    store = store_of(request)
    store.pipelines.latest_version(access.project.id, policy.pipeline)  # 404 if missing
    if policy.canary is not None:
        store.deployments.get_deployment(access.project.id, policy.canary.deployment)
    record = store.policies.put_policy(
        PolicyRecord(
            id=new_id(),
            project_id=access.project.id,
            name=policy.name,
            spec=body.spec,
            enabled=True,
            created_by=access.user,
            created_at=time.time(),
        ),
        replace=body.replace,
    )
    store.audit.record(
        access.project.id, access.user, "put-policy", "policy", record.id, {"name": policy.name}
    )
    return record


@router.get("/policies/{name}", response_model=PolicyRecord)
def get_policy(
    name: str, request: Request, access: Access = Depends(need("viewer"))
) -> PolicyRecord:
    return store_of(request).policies.get_policy(access.project.id, name)


@router.put("/policies/{name}/enabled", response_model=PolicyRecord)
def set_enabled(
    name: str, body: EnabledIn, request: Request, access: Access = Depends(need("editor"))
) -> PolicyRecord:
    store = store_of(request)
    policy = store.policies.get_policy(access.project.id, name)
    store.policies.set_enabled(policy.id, body.enabled)
    action = "enable-policy" if body.enabled else "disable-policy"
    store.audit.record(access.project.id, access.user, action, "policy", policy.id)
    return store.policies.get_policy(access.project.id, name)


@router.delete("/policies/{name}", status_code=204)
def delete_policy(
    name: str, request: Request, access: Access = Depends(need("editor"))
) -> Response:
    store = store_of(request)
    policy = store.policies.get_policy(access.project.id, name)
    store.policies.delete_policy(policy.id)
    store.audit.record(
        access.project.id, access.user, "delete-policy", "policy", policy.id, {"name": name}
    )
    return Response(status_code=204)


@router.get("/policy-runs", response_model=list[PolicyRunRecord])
def list_policy_runs(
    request: Request,
    access: Access = Depends(need("viewer")),
    policy: Annotated[str | None, Query(max_length=200)] = None,
    state: Literal["running", "promoted", "rolled_back", "not_promoted", "failed"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[PolicyRunRecord]:
    """What policies did, newest first: each step with what it touched and why."""
    store = store_of(request)
    policy_id = store.policies.get_policy(access.project.id, policy).id if policy else None
    return store.policies.list_runs(access.project.id, policy_id, state, limit)


@router.get("/policy-runs/{run_id}", response_model=PolicyRunRecord)
def get_policy_run(
    run_id: str, request: Request, access: Access = Depends(need("viewer"))
) -> PolicyRunRecord:
    from treadle.errors import NotFoundError

    store = store_of(request)
    try:
        found = store.policies.get_run(run_id)
    except NotFoundError:
        found = None
    if found is None or found.project_id != access.project.id:
        raise NotFoundError(f"no policy run with id {run_id!r}")
    return found
