"""Step runs by id: the record, what it read and what it produced."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from treadle.errors import NotFoundError
from treadle.server.auth import Access, need, store_of
from treadle.store import Store
from treadle.store.records import ArtifactRecord, StepRunRecord

router = APIRouter(prefix="/projects/{project}", tags=["runs"])


def step_run_in(store: Store, step_run_id: str, project_id: str) -> StepRunRecord:
    """The step run, if it belongs to the project; one of another project is not found,
    exactly as if it did not exist."""
    step_run: StepRunRecord | None
    try:
        step_run = store.runs.get_step(step_run_id)
    except NotFoundError:
        step_run = None
    if step_run is None or step_run.project_id != project_id:
        raise NotFoundError(
            f"no step run with id {step_run_id!r}", "see a run's steps with `treadle runs show`"
        )
    return step_run


@router.get("/step-runs/{step_run_id}", response_model=StepRunRecord)
def get_step_run(
    step_run_id: str, request: Request, access: Access = Depends(need("viewer"))
) -> StepRunRecord:
    return step_run_in(store_of(request), step_run_id, access.project.id)


@router.get("/step-runs/{step_run_id}/outputs", response_model=dict[str, ArtifactRecord])
def step_outputs(
    step_run_id: str, request: Request, access: Access = Depends(need("viewer"))
) -> dict[str, ArtifactRecord]:
    """What the step run produced (or reused from the cache), by output name."""
    store = store_of(request)
    return store.artifacts.step_outputs(step_run_in(store, step_run_id, access.project.id).id)


@router.get("/step-runs/{step_run_id}/inputs", response_model=list[str])
def step_input_ids(
    step_run_id: str, request: Request, access: Access = Depends(need("viewer"))
) -> list[str]:
    """The ids of the artifacts the step run read."""
    store = store_of(request)
    return store.artifacts.step_input_ids(step_run_in(store, step_run_id, access.project.id).id)
