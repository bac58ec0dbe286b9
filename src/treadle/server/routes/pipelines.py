"""Pipelines and their immutable, content-hashed versions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from treadle.errors import InvalidInputError, NotFoundError
from treadle.packaging import read_package, source_of
from treadle.server.auth import Access, need, store_of
from treadle.store import Store
from treadle.store.records import DeployedPackage, PipelineRecord, PipelineVersionRecord

router = APIRouter(prefix="/projects/{project}", tags=["pipelines"])
BINARY_TYPES = ("application/zip", "application/octet-stream")


@router.get("/pipelines", response_model=list[PipelineRecord])
def list_pipelines(
    request: Request, access: Access = Depends(need("viewer"))
) -> list[PipelineRecord]:
    return store_of(request).pipelines.list_pipelines(access.project.id)


@router.get("/pipeline-versions/{version_id}", response_model=PipelineVersionRecord)
def get_pipeline_version(
    version_id: str, request: Request, access: Access = Depends(need("viewer"))
) -> PipelineVersionRecord:
    """A pipeline version by id: its spec and source, as the runs that used it saw them."""
    found: tuple[PipelineRecord, PipelineVersionRecord] | None = None
    try:
        found = store_of(request).pipelines.get_version(version_id)
    except NotFoundError:
        pass
    if found is None or found[0].project_id != access.project.id:
        raise NotFoundError(f"no pipeline version with id {version_id!r}")
    return found[1]


@router.get("/pipelines/{name}/versions", response_model=list[PipelineVersionRecord])
def list_versions(
    name: str, request: Request, access: Access = Depends(need("viewer"))
) -> list[PipelineVersionRecord]:
    """Every version of a pipeline, oldest first."""
    return store_of(request).pipelines.list_versions(access.project.id, name)


@router.get("/pipelines/{name}/latest", response_model=PipelineVersionRecord)
def latest_version(
    name: str, request: Request, access: Access = Depends(need("viewer"))
) -> PipelineVersionRecord:
    """The newest version of a pipeline: what a submitted run of it executes."""
    return store_of(request).pipelines.latest_version(access.project.id, name)[1]


_PACKAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in BINARY_TYPES},
    }
}


@router.post(
    "/pipelines/packages",
    response_model=DeployedPackage,
    status_code=201,
    openapi_extra=_PACKAGE_BODY,
)
async def deploy_package(
    request: Request,
    access: Access = Depends(need("editor")),
    current: bool = True,
    forced: Annotated[str | None, Query(min_length=1, max_length=500)] = None,
    pipeline: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> DeployedPackage:
    """Register a pipeline package (`treadle pipeline build` writes one) as a version of
    its pipeline and, unless `current=false`, make it the version submitted and scheduled
    runs execute. The package is checked whole first: a tampered or malformed one is
    refused and nothing is recorded. Runs of the version execute the package's code.
    `forced` records, in the audit log, why a promotion check was skipped; `pipeline`
    refuses a package built for any other pipeline."""
    data = await request.body()
    return await run_in_threadpool(_register, data, request, access, current, forced, pipeline)


def _register(
    data: bytes,
    request: Request,
    access: Access,
    current: bool,
    forced: str | None,
    expected: str | None,
) -> DeployedPackage:
    package = read_package(data)
    if expected is not None and package.manifest.name != expected:
        raise InvalidInputError(
            f"pipeline: the package was built for {package.manifest.name!r}, not {expected!r}",
            "deploy the package of that pipeline",
        )
    store = store_of(request)
    manifest = package.manifest
    known = {v.hash for v in _versions(store, access.project.id, manifest.name)}
    sha, _ = store.objects.put_bytes(package.data)
    pipeline, version = store.pipelines.ensure_version(
        access.project.id, manifest.name, manifest.hash, manifest.spec, source_of(package)
    )
    if current:
        pipeline = store.pipelines.set_current(access.project.id, manifest.name, version.id)
    detail: dict[str, object] = {
        "pipeline": manifest.name,
        "version": manifest.version,
        "package_sha256": sha,
        "current": current,
    }
    if forced:
        detail["forced"] = forced
    store.audit.record(
        access.project.id,
        access.user,
        "deploy-pipeline",
        "pipeline-version",
        version.id,
        detail,
    )
    return DeployedPackage(pipeline, version, sha, manifest.hash not in known)


def _versions(store: Store, project_id: str, name: str) -> list[PipelineVersionRecord]:
    try:
        return store.pipelines.list_versions(project_id, name)
    except NotFoundError:
        return []


class CurrentIn(BaseModel):
    pipeline_version: str = Field(min_length=1, max_length=64)
    """A version id, its hash, or a prefix of the hash of at least 6 characters (the
    VERSION in a package's file name)."""
    reason: str = Field(default="", max_length=500)


@router.put("/pipelines/{name}/current", response_model=PipelineRecord)
def set_current(
    name: str, body: CurrentIn, request: Request, access: Access = Depends(need("editor"))
) -> PipelineRecord:
    """Make a version the one submitted and scheduled runs execute (a rollback, or a
    roll forward to a version deployed before)."""
    store = store_of(request)
    versions = store.pipelines.list_versions(access.project.id, name)
    version = find_version(versions, body.pipeline_version)
    pipeline = store.pipelines.set_current(access.project.id, name, version.id)
    store.audit.record(
        access.project.id,
        access.user,
        "set-current-pipeline-version",
        "pipeline",
        pipeline.id,
        {"pipeline": name, "version": version.hash[:12], "reason": body.reason},
    )
    return pipeline


def find_version(versions: list[PipelineVersionRecord], ref: str) -> PipelineVersionRecord:
    exact = [v for v in versions if ref in (v.id, v.hash)]
    found = exact or (
        [v for v in versions if v.hash.startswith(ref.lower())] if len(ref) >= 6 else []
    )
    if len(found) != 1:
        raise NotFoundError(
            f"no version {ref!r} of this pipeline"
            if not found
            else f"version {ref!r} is ambiguous: give more of its hash",
            "list them with `treadle pipeline versions NAME`",
        )
    return found[0]
