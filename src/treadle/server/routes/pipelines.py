"""Pipelines and their immutable, content-hashed versions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from treadle.errors import NotFoundError
from treadle.server.auth import Access, need, store_of
from treadle.store.records import PipelineRecord, PipelineVersionRecord

router = APIRouter(prefix="/projects/{project}", tags=["pipelines"])


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


@router.get("/pipelines/{name}/latest", response_model=PipelineVersionRecord)
def latest_version(
    name: str, request: Request, access: Access = Depends(need("viewer"))
) -> PipelineVersionRecord:
    """The newest version of a pipeline: what a submitted run of it executes."""
    return store_of(request).pipelines.latest_version(access.project.id, name)[1]
