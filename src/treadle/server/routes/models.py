"""The model registry: models, versions, aliases (moved through gates) and their history."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from treadle.errors import NotFoundError
from treadle.server.acting import acting_store
from treadle.server.auth import Access, need, store_of
from treadle.store.records import (
    AliasEventRecord,
    AliasRecord,
    ModelVersionRecord,
    RegisteredModelRecord,
)

if TYPE_CHECKING:
    from treadle.registry.gates import GateResult

# The registry (and the model flavors under it) load in the routes that change aliases,
# so that the server starts without them.

router = APIRouter(prefix="/projects/{project}", tags=["models"])

Version = Annotated[int, Path(ge=1, le=2**31, description="The version number: 1, 2, 3…")]
GATES = (
    "Gate conditions that must all hold, e.g. `accuracy >= 0.9` or `auc >= champion.auc - 0.01`."
)


class AliasIn(BaseModel):
    version: int = Field(ge=1, le=2**31)
    require: list[str] = Field(default_factory=list, max_length=50, description=GATES)
    reason: str = Field(default="", max_length=1000)


class PromoteIn(BaseModel):
    source: str = Field(min_length=1, max_length=64, description="Alias (or version) to promote.")
    target: str = Field(min_length=1, max_length=64, description="Alias to move.")
    require: list[str] = Field(default_factory=list, max_length=50, description=GATES)


class TrustIn(BaseModel):
    trusted: bool


class GateCheck(BaseModel):
    condition: str
    passed: bool
    detail: str


class AliasMove(BaseModel):
    """Where the alias points now, and the gate conditions it passed to get there."""

    alias: AliasRecord
    gates: list[GateCheck]


def _move(record: AliasRecord, results: Sequence[GateResult]) -> AliasMove:
    gates = [GateCheck(condition=r.condition, passed=r.passed, detail=r.detail) for r in results]
    return AliasMove(alias=record, gates=gates)


@router.get("/models", response_model=list[RegisteredModelRecord])
def list_models(
    request: Request, access: Access = Depends(need("viewer"))
) -> list[RegisteredModelRecord]:
    return store_of(request).models.list_models(access.project.id)


@router.get("/models/{name}", response_model=RegisteredModelRecord)
def get_model(
    name: str, request: Request, access: Access = Depends(need("viewer"))
) -> RegisteredModelRecord:
    return store_of(request).models.get_model(access.project.id, name)


@router.get("/models/{name}/versions", response_model=list[ModelVersionRecord])
def list_versions(
    name: str, request: Request, access: Access = Depends(need("viewer"))
) -> list[ModelVersionRecord]:
    """Every version, oldest first."""
    store = store_of(request)
    return store.models.list_versions(store.models.get_model(access.project.id, name).id)


@router.get("/models/{name}/versions/{version}", response_model=ModelVersionRecord)
def get_version(
    name: str, version: Version, request: Request, access: Access = Depends(need("viewer"))
) -> ModelVersionRecord:
    store = store_of(request)
    return store.models.get_version(store.models.get_model(access.project.id, name).id, version)


@router.put("/models/{name}/versions/{version}/trust", response_model=ModelVersionRecord)
def set_trusted(
    name: str,
    version: Version,
    body: TrustIn,
    request: Request,
    access: Access = Depends(need("owner")),
) -> ModelVersionRecord:
    """Mark a version trusted, or take the trust back (owners): only trusted versions may
    load pickled models."""
    store = store_of(request)
    model = store.models.get_model(access.project.id, name)
    record = store.models.set_trusted(store.models.get_version(model.id, version).id, body.trusted)
    store.audit.record(
        access.project.id,
        access.user,
        "trust" if body.trusted else "untrust",
        "model-version",
        f"{model.name}@{version}",
    )
    return record


@router.get("/model-versions/{version_id}", response_model=ModelVersionRecord)
def get_version_by_id(
    version_id: str, request: Request, access: Access = Depends(need("viewer"))
) -> ModelVersionRecord:
    """A version by its id (what an alias record points at)."""
    store = store_of(request)
    found: ModelVersionRecord | None = None
    try:
        found = store.models.get_version_by_id(version_id)
    except NotFoundError:
        pass
    mine = {m.id for m in store.models.list_models(access.project.id)}
    if found is None or found.model_id not in mine:
        raise NotFoundError(f"no model version with id {version_id!r}")
    return found


@router.get("/models/{name}/aliases", response_model=list[AliasRecord])
def list_aliases(
    name: str, request: Request, access: Access = Depends(need("viewer"))
) -> list[AliasRecord]:
    store = store_of(request)
    return store.models.list_aliases(store.models.get_model(access.project.id, name).id)


@router.get("/models/{name}/aliases/{alias}", response_model=AliasRecord)
def get_alias(
    name: str, alias: str, request: Request, access: Access = Depends(need("viewer"))
) -> AliasRecord:
    store = store_of(request)
    return store.models.get_alias(store.models.get_model(access.project.id, name).id, alias)


@router.put("/models/{name}/aliases/{alias}", response_model=AliasMove)
def set_alias(
    name: str,
    alias: str,
    body: AliasIn,
    request: Request,
    access: Access = Depends(need("editor")),
) -> AliasMove:
    """Point the alias at a version, if every gate condition holds; a refusal is a 409 that
    names the condition that failed."""
    from treadle.registry import set_alias as move_alias

    store = store_of(request)
    record, results = move_alias(
        f"{name}@{body.version}",
        alias,
        require_conditions=body.require,
        reason=body.reason,
        store=acting_store(store, access),
    )
    store.audit.record(
        access.project.id,
        access.user,
        "set-alias",
        "model",
        name,
        {"alias": alias, "version": record.version, "require": body.require},
    )
    return _move(record, results)


@router.delete("/models/{name}/aliases/{alias}", status_code=204)
def delete_alias(
    name: str,
    alias: str,
    request: Request,
    access: Access = Depends(need("editor")),
    reason: Annotated[str, Query(max_length=1000)] = "",
) -> None:
    """Remove the alias; its history keeps the removal."""
    store = store_of(request)
    model = store.models.get_model(access.project.id, name)
    store.models.delete_alias(model.id, alias, user=access.user, reason=reason or "removed")
    store.audit.record(
        access.project.id, access.user, "delete-alias", "model", name, {"alias": alias}
    )


@router.post("/models/{name}/promote", response_model=AliasMove)
def promote(
    name: str, body: PromoteIn, request: Request, access: Access = Depends(need("editor"))
) -> AliasMove:
    """Move alias `target` to the version `source` points at (e.g. challenger → champion),
    through the gate conditions; a refusal is a 409 naming the failed condition."""
    from treadle.registry import promote as promote_alias

    store = store_of(request)
    record, results = promote_alias(
        name,
        source=body.source,
        target=body.target,
        require_conditions=body.require,
        store=acting_store(store, access),
    )
    store.audit.record(
        access.project.id,
        access.user,
        "promote",
        "model",
        name,
        {
            "source": body.source,
            "target": body.target,
            "version": record.version,
            "require": body.require,
        },
    )
    return _move(record, results)


@router.get("/models/{name}/alias-history", response_model=list[AliasEventRecord])
def alias_history(
    name: str,
    request: Request,
    access: Access = Depends(need("viewer")),
    alias: str | None = None,
) -> list[AliasEventRecord]:
    """Every move of the model's aliases (one alias with `?alias=`), oldest first."""
    store = store_of(request)
    return store.models.alias_history(store.models.get_model(access.project.id, name).id, alias)
