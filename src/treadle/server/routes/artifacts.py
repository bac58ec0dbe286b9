"""Artifacts: metadata, lineage, and their bytes (with HTTP range requests); the objects
a project refers to (model manifests, step logs) by their sha256."""

from __future__ import annotations

import re

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response

from treadle.errors import NotFoundError
from treadle.server.auth import Access, need, store_of
from treadle.store.records import ArtifactRecord, Lineage, RunOutput

router = APIRouter(prefix="/projects/{project}", tags=["artifacts"])
_SHA = re.compile("[0-9a-f]{64}")


@router.get("/artifacts/{artifact_id}", response_model=ArtifactRecord)
def get_artifact(
    artifact_id: str, request: Request, access: Access = Depends(need("viewer"))
) -> ArtifactRecord:
    return store_of(request).artifacts.get_artifact(artifact_id, access.project.id)


@router.get("/artifacts/{artifact_id}/lineage", response_model=Lineage)
def lineage(
    artifact_id: str, request: Request, access: Access = Depends(need("viewer"))
) -> Lineage:
    """The step runs that produced and consumed the artifact."""
    store = store_of(request)
    return store.artifacts.lineage(store.artifacts.get_artifact(artifact_id, access.project.id).id)


@router.get("/artifacts/{artifact_id}/content", response_model=None)
def content(
    artifact_id: str, request: Request, access: Access = Depends(need("viewer"))
) -> Response:
    """The artifact's bytes, checked against its sha256; `Range` requests are honoured."""
    store = store_of(request)
    record = store.artifacts.get_artifact(artifact_id, access.project.id)
    path = store.objects.verified_path(record.sha256)
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=f"{record.name}-{record.sha256[:12]}",
        headers={"x-sha256": record.sha256},
    )


@router.get("/runs/{run_id}/artifacts", response_model=list[ArtifactRecord])
def run_artifacts(
    run_id: str, request: Request, access: Access = Depends(need("viewer"))
) -> list[ArtifactRecord]:
    """What the run's steps produced (or reused from the cache)."""
    store = store_of(request)
    run = store.runs.get_run(run_id, access.project.id)
    return [a for _, _, a in store.artifacts.run_artifacts(run.id)]


@router.get("/runs/{run_id}/outputs", response_model=list[RunOutput])
def run_outputs(
    run_id: str, request: Request, access: Access = Depends(need("viewer"))
) -> list[RunOutput]:
    """What the run's steps produced, each with the step run and output name it came from."""
    store = store_of(request)
    run = store.runs.get_run(run_id, access.project.id)
    return [RunOutput(s, name, a) for s, name, a in store.artifacts.run_artifacts(run.id)]


@router.get("/objects/{sha}", response_model=None)
def get_object(sha: str, request: Request, access: Access = Depends(need("viewer"))) -> Response:
    """An object the project refers to (an artifact's bytes, a model version's manifest, a
    step's log) by its sha256, checked against it; `Range` requests are honoured."""
    store = store_of(request)
    # a malformed digest is one more object the project does not have: the same 404
    if not _SHA.fullmatch(sha) or not store.artifacts.has_object(access.project.id, sha):
        raise NotFoundError(f"no object {sha[:12]!r} in project {access.project.name!r}")
    return FileResponse(
        store.objects.verified_path(sha),
        media_type="application/octet-stream",
        filename=sha,
        headers={"x-sha256": sha},
    )
