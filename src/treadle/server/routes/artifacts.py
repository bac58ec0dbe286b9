"""Artifacts: metadata, lineage, and their bytes (with HTTP range requests); the objects
a project refers to (model manifests and files, step logs) by their sha256."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response

from treadle.errors import NotFoundError, TreadleError
from treadle.models.format import read_manifest
from treadle.server.auth import Access, need, store_of
from treadle.store import Store
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
    """An object the project refers to (an artifact's bytes, a model version's manifest
    or one of its files, a step's log) by its sha256, checked against it; `Range`
    requests are honoured. This is how a model is loaded through the server."""
    store = store_of(request)
    # a malformed digest is one more object the project does not have: the same 404
    if not _SHA.fullmatch(sha) or not (
        store.artifacts.has_object(access.project.id, sha)
        or _is_model_file(store, access.project.id, sha)
    ):
        raise NotFoundError(f"no object {sha[:12]!r} in project {access.project.name!r}")
    return FileResponse(
        store.objects.verified_path(sha),
        media_type="application/octet-stream",
        filename=sha,
        headers={"x-sha256": sha},
    )


# manifest sha -> the shas of the version's files; a manifest never changes (its sha is
# its content), so entries stay right and only the size needs a bound
_MANIFEST_FILES: OrderedDict[str, frozenset[str]] = OrderedDict()
_MANIFEST_FILES_MAX = 4096
_manifest_lock = threading.Lock()


def _is_model_file(store: Store, project_id: str, sha: str) -> bool:
    """Whether `sha` is a payload file of one of the project's model versions (their
    manifests list them). Objects are shared by content across projects, so the question
    is always asked of the caller's own versions."""
    for model in store.models.list_models(project_id):
        for version in store.models.list_versions(model.id):
            if sha in _manifest_files(store, version.manifest_sha):
                return True
    return False


def _manifest_files(store: Store, manifest_sha: str) -> frozenset[str]:
    with _manifest_lock:
        known = _MANIFEST_FILES.get(manifest_sha)
        if known is not None:
            _MANIFEST_FILES.move_to_end(manifest_sha)
            return known
    try:
        files = frozenset(read_manifest(manifest_sha, store.objects).files.values())
    except (TreadleError, ValueError, TypeError, AttributeError):
        # a missing or damaged manifest lists nothing (loading that version fails on its
        # own, with its own error); not cached, so a repaired store is seen again
        return frozenset()
    with _manifest_lock:
        _MANIFEST_FILES[manifest_sha] = files
        while len(_MANIFEST_FILES) > _MANIFEST_FILES_MAX:
            _MANIFEST_FILES.popitem(last=False)
    return files
