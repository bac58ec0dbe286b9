"""Deployments: creating and changing them (`treadle deploy`), their numbered revisions
(synced with the aliases they follow), traffic policy, rollback and follow, and the true
labels of their predictions, passed on to the model server `treadle up` runs for them."""

from __future__ import annotations

import json
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from treadle.errors import ConflictError, InvalidInputError, TreadleError
from treadle.server.acting import acting_store
from treadle.server.auth import Access, need, store_of
from treadle.store import Store
from treadle.store.records import DeploymentRecord, DeploymentRevisionRecord

# treadle.serving.deployments reaches the registry and the model flavors: it loads in
# the routes that change a deployment, so that the server starts without them.

router = APIRouter(prefix="/projects/{project}", tags=["deployments"])

# a model server on this machine answers a /feedback at once; one that takes longer is
# hung, and the caller hears so instead of waiting on it
FORWARD_TIMEOUT = httpx.Timeout(5.0, connect=1.0)

# a new deployment's name becomes part of file names on the server (the controller's pid
# file and log): the characters of a project name only
NewName = Annotated[
    str,
    Path(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="The deployment's name: letters, digits, `.`, `_` and `-`.",
    ),
]


class DeployIn(BaseModel):
    ref: str = Field(
        min_length=1,
        max_length=300,
        description="What the deployment follows: NAME@ALIAS, NAME@3 or NAME (the newest).",
    )
    policy: str = Field(default="single", pattern="^(single|canary|shadow)$")
    candidate: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Alias or version of the candidate (canary, shadow).",
    )
    canary_weight: float = Field(
        default=0.1, gt=0, lt=1, description="The candidate's share of requests (canary)."
    )
    port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Where `treadle up` runs the deployment's model server (none: it does "
        "not, and an existing deployment keeps its port).",
    )


class Deployed(BaseModel):
    """The deployment as it is now, and the revision it serves."""

    deployment: DeploymentRecord
    revision: DeploymentRevisionRecord


class TrafficIn(BaseModel):
    policy: str = Field(pattern="^(single|canary|shadow)$")
    candidate: str | None = Field(
        default=None, min_length=1, max_length=64, description="Alias or version."
    )
    canary_weight: float = Field(
        default=0.1, gt=0, lt=1, description="The candidate's share of requests (canary)."
    )


class _Label(BaseModel):
    model_config = ConfigDict(extra="forbid")

    row: int | None = Field(
        default=None,
        ge=0,
        strict=True,
        description="Which row of a request of several the label is for (from 0; default 0).",
    )
    label: Any = Field(
        default=None,
        description="The true label, of the model's output type (a number for a numeric "
        "prediction).",
    )
    labels: list[Any] | None = Field(
        default=None, description="One label per row of the request, instead of `label`."
    )


class LabelIn(_Label):
    """The true label of one answered request, or of one row of it."""

    request_id: str = Field(
        min_length=1,
        strict=True,
        description="The id the prediction's answer carried (`x-request-id` or `request_id`).",
    )


class FeedbackIn(_Label):
    """`{"request_id", "label"}` (with `row` for one row of a request of several),
    `{"request_id", "labels": [...]}` (one per row), or `{"feedback": [...]}` of either:
    the body the model server's own `POST /feedback` takes."""

    request_id: str | None = Field(
        default=None,
        min_length=1,
        strict=True,
        description="The id the prediction's answer carried (`x-request-id` or `request_id`).",
    )
    feedback: list[LabelIn] | None = Field(
        default=None, min_length=1, max_length=100_000, description="Many labels at once."
    )


class FeedbackAccepted(BaseModel):
    accepted: int = Field(description="How many labels the model server took.")


class ModelServerDown(TreadleError):
    """The deployment's model server did not answer."""

    http_status = 503


class ModelServerFailed(TreadleError):
    """The deployment's model server answered with something other than its own answer
    or refusal."""

    http_status = 502


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


@router.put("/deployments/{name}", response_model=Deployed)
def deploy(
    name: NewName, body: DeployIn, request: Request, access: Access = Depends(need("editor"))
) -> Deployed:
    """Create the deployment, or change what it follows, its policy or its port (what
    `treadle deploy` does). With a port, `treadle up` runs and supervises its server."""
    from treadle.registry import parse_ref
    from treadle.serving import deployments as ops

    store = store_of(request)
    spec = ops.make_spec(
        parse_ref(body.ref),
        policy=body.policy,
        candidate=body.candidate if body.policy != "single" else None,
        canary_weight=body.canary_weight,
        port=body.port,
    )
    if body.port is not None:
        _check_port_free(store, access, name, body.port)
    deployment, revision = ops.deploy(acting_store(store, access), access.project.id, name, spec)
    store.audit.record(
        access.project.id,
        access.user,
        "deploy",
        "deployment",
        name,
        {
            "ref": body.ref,
            "policy": body.policy,
            "candidate": spec["candidate"],
            "canary_weight": spec["canary_weight"] if body.policy == "canary" else None,
            "port": deployment.spec.get("port"),
            "revision": revision.number,
        },
    )
    return Deployed(deployment=deployment, revision=revision)


@router.post("/deployments/{name}/sync", response_model=DeploymentRevisionRecord)
def sync(
    name: str, request: Request, access: Access = Depends(need("editor"))
) -> DeploymentRevisionRecord:
    """Record a new revision if what the deployment follows resolves to other versions
    now (an alias moved); answers the revision to serve. A model server run away from
    the control plane (`treadle deployments serve` against a server) calls it to follow
    its aliases."""
    from treadle.serving import deployments as ops

    store = store_of(request)
    deployment = store.deployments.get_deployment(access.project.id, name)
    before = store.deployments.current_revision(deployment.id)
    revision = ops.sync(acting_store(store, access), access.project.id, deployment)
    if before is None or revision.number != before.number:
        store.audit.record(
            access.project.id,
            access.user,
            "sync",
            "deployment",
            name,
            {"revision": revision.number},
        )
    return revision


@router.post("/deployments/{name}/feedback", status_code=202, response_model=FeedbackAccepted)
def send_feedback(
    name: str, body: FeedbackIn, request: Request, access: Access = Depends(need("editor"))
) -> Response:
    """The true labels of requests the deployment answered, passed on to the model server
    `treadle up` runs for it (the deployment's port), whose answer comes back unchanged:
    202 with the count, 404 naming `request_id` for an id it did not answer recently,
    422 naming `label` for a label of the wrong type. A deployment without a port is a
    409, a model server that does not answer a 503. Labels are data, not a change to the
    deployment: they come by the thousand and go to the feedback log, not the audit log."""
    if body.feedback is not None and body.model_fields_set - {"feedback"}:
        raise InvalidInputError(
            "send feedback (a list) alone, or one request's request_id with label or labels",
            'e.g. {"feedback": [{"request_id": "…", "label": 1}]}',
        )
    deployment = store_of(request).deployments.get_deployment(access.project.id, name)
    port = deployment.spec.get("port")
    if not isinstance(port, int):
        raise ConflictError(
            f"deployment {name!r} has no port: no model server of this platform serves it",
            "send the labels to its model server's own POST /feedback, or deploy it with a "
            f"port (`treadle deploy REF --name {name} --port N`) so that `treadle up` runs it",
        )
    try:
        # the request's JSON may hold NaN or Infinity (Python's parser takes them); JSON
        # proper has neither, and no model's label is one
        content = json.dumps(body.model_dump(exclude_unset=True), allow_nan=False)
    except ValueError:
        raise InvalidInputError(
            "label: NaN and Infinity are not labels", "send the true value as a number"
        ) from None
    try:
        answer = httpx.post(
            f"http://127.0.0.1:{port}/feedback",
            content=content,
            headers={"content-type": "application/json"},
            timeout=FORWARD_TIMEOUT,
            trust_env=False,  # a proxy from the environment must not stand in between
        )
    except httpx.HTTPError as exc:
        raise ModelServerDown(
            f"the server of deployment {name!r} (127.0.0.1:{port}) is not answering: "
            f"{str(exc) or type(exc).__name__}",
            "`treadle up` restarts a server that stopped (its log is under "
            "$TREADLE_HOME/logs/deployments); try again in a few seconds",
        ) from None
    kind = answer.headers.get("content-type", "")
    if not kind.startswith("application/json") or (
        answer.status_code >= 500 and answer.status_code != 503
    ):
        raise ModelServerFailed(
            f"the server of deployment {name!r} (127.0.0.1:{port}) answered {answer.status_code} "
            f"{kind or 'without a content type'}: {answer.text[:200]}",
            "read its log under $TREADLE_HOME/logs/deployments",
        )
    return Response(answer.content, status_code=answer.status_code, media_type=kind)


def _check_port_free(store: Store, access: Access, name: str, port: int) -> None:
    """Two deployments on one port would leave the second server failing to start, over
    and over; the other one may be in a project the caller cannot see, so it goes unnamed."""
    for project in store.projects.list_projects():
        for other in store.deployments.list_deployments(project.id):
            mine = project.id == access.project.id and other.name == name
            if not mine and other.spec.get("port") == port:
                raise ConflictError(
                    f"port {port} is taken by another deployment on this server",
                    "choose another port",
                )
