"""What crosses from the runner to whoever executes a step, and back: plain data only,
so a thread, a process, a Ray worker or a Kubeflow pod can carry it."""

from __future__ import annotations

import dataclasses
from typing import Any

from treadle.config import Settings
from treadle.store.records import StepRunRecord
from treadle.types import StepState


@dataclasses.dataclass(frozen=True)
class ArtifactInput:
    """An artifact a step reads (with `index`: one item of a list artifact)."""

    artifact_id: str
    sha256: str
    uri: str
    materializer: str
    index: int | None = None


@dataclasses.dataclass(frozen=True)
class TaskInput:
    """One input of a step: an artifact, a constant, or a list of inputs (a join)."""

    artifact: ArtifactInput | None = None
    value: Any = None
    items: tuple[TaskInput, ...] | None = None

    def artifacts(self) -> list[ArtifactInput]:
        if self.artifact is not None:
            return [self.artifact]
        if self.items is not None:
            return [a for item in self.items for a in item.artifacts()]
        return []


@dataclasses.dataclass(frozen=True)
class StepTask:
    run_id: str
    project_id: str
    step_run_id: str
    node: str
    unit: str
    step_name: str
    step_ref: str
    source_file: str | None
    attempt: int
    inputs: dict[str, TaskInput]
    outputs: tuple[tuple[str, str | None], ...]
    """(output name, artifact kind from the annotation or None)."""
    cache_key: str | None
    allow_pickle: bool
    settings: Settings

    def step_run(self, state: StepState, at: float, **changes: Any) -> StepRunRecord:
        """The step-run record of this attempt in `state`, started at `at`."""
        return StepRunRecord(
            id=self.step_run_id,
            run_id=self.run_id,
            project_id=self.project_id,
            node=self.unit,
            step_name=self.step_name,
            attempt=self.attempt,
            state=state,
            started_at=at,
            cache_key=self.cache_key,
            **changes,
        )


@dataclasses.dataclass(frozen=True)
class StepResult:
    step_run_id: str
    unit: str
    ok: bool
    outputs: dict[str, ArtifactInput] = dataclasses.field(default_factory=dict)
    error: str | None = None
    error_line: str | None = None
    """The last line of the traceback, e.g. "ValueError: bad data"."""
    recorded: bool = True
    """False when the worker could not record the outcome itself (its process died)."""
