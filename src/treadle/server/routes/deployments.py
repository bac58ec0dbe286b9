"""Deployments: their specs, numbered revisions, traffic policy, rollback and follow."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from treadle.server.acting import acting_store
from treadle.server.auth import Access, need, store_of
from treadle.store.records import DeploymentRecord, DeploymentRevisionRecord

# treadle.serving.deployments reaches the registry and the model flavors: it loads in
# the routes that change a deployment, so that the server starts without them.

router = APIRouter(prefix="/projects/{project}", tags=["deployments"])


class TrafficIn(BaseModel):
    policy: str = Field(pattern="^(single|canary|shadow)$")
    candidate: str | None = Field(
        default=None, min_length=1, max_length=64, description="Alias or version."
    )
    canary_weight: float = Field(
        default=0.1, gt=0, lt=1, description="The candidate's share of requests (canary)."
    )


@router.get("/deployments", response_model=list[DeploymentRecord])
def list_deployments(
    request: Request, access: Access = Depends(need("viewer"))
) -> list[DeploymentRecord]:
    return store_of(request).deployments.list_deployments(access.project.id)


@router.get("/deployments/{name}", response_model=DeploymentRecord)
def get_deployment(
    name: str, request: Request, access: Access = Depends(need("viewer"))
) -> DeploymentRecord:
    return store_of(request).deployments.get_deployment(access.project.id, name)


@router.get("/deployments/{name}/revisions", response_model=list[DeploymentRevisionRecord])
def list_revisions(
    name: str, request: Request, access: Access = Depends(need("viewer"))
) -> list[DeploymentRevisionRecord]:
    """Every revision, oldest first; the last one is what is served now."""
    store = store_of(request)
    deployment = store.deployments.get_deployment(access.project.id, name)
    return store.deployments.list_revisions(deployment.id)


@router.post("/deployments/{name}/rollback", response_model=DeploymentRevisionRecord)
def rollback(
    name: str, request: Request, access: Access = Depends(need("editor"))
) -> DeploymentRevisionRecord:
    """Go back to the previous revision's versions and stay there (pinned) until `follow`."""
    from treadle.serving import deployments as ops

    store = store_of(request)
    revision = ops.rollback(acting_store(store, access), access.project.id, name)
    store.audit.record(
        access.project.id,
        access.user,
        "rollback",
        "deployment",
        name,
        {"revision": revision.number},
    )
    return revision


@router.post("/deployments/{name}/follow", response_model=DeploymentRevisionRecord)
def follow(
    name: str, request: Request, access: Access = Depends(need("editor"))
) -> DeploymentRevisionRecord:
    """Follow the aliases again after a rollback."""
    from treadle.serving import deployments as ops

    store = store_of(request)
    revision = ops.follow(acting_store(store, access), access.project.id, name)
    store.audit.record(
        access.project.id, access.user, "follow", "deployment", name, {"revision": revision.number}
    )
    return revision


@router.put("/deployments/{name}/traffic", response_model=DeploymentRevisionRecord)
def set_traffic(
    name: str, body: TrafficIn, request: Request, access: Access = Depends(need("editor"))
) -> DeploymentRevisionRecord:
    """Serve the primary alone (`single`), give a candidate a share of the requests
    (`canary`), or mirror requests to it (`shadow`)."""
    from treadle.serving import deployments as ops

    store = store_of(request)
    _, revision = ops.set_traffic(
        acting_store(store, access),
        access.project.id,
        name,
        body.policy,
        candidate=body.candidate,
        canary_weight=body.canary_weight,
    )
    store.audit.record(
        access.project.id,
        access.user,
        "set-traffic",
        "deployment",
        name,
        {
            "policy": body.policy,
            "candidate": body.candidate,
            "canary_weight": body.canary_weight if body.policy == "canary" else None,
            "revision": revision.number,
        },
    )
    return revision
