"""The store's interfaces, one small Protocol per group of nouns.

The SQL implementations live in treadle.store.sql; a REST implementation can stand in
for them on the far side of a server without its callers changing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from treadle.store.records import (
    ArtifactRecord,
    ExperimentRecord,
    ExperimentSummary,
    Lineage,
    LineageEdge,
    MetricRecord,
    PipelineRecord,
    PipelineVersionRecord,
    ProjectRecord,
    RunRecord,
    StepRunRecord,
)
from treadle.types import RunState, StepState


class ProjectStore(Protocol):
    def ensure_project(self, name: str, user: str) -> ProjectRecord: ...
    def ensure_experiment(self, project_id: str, name: str, user: str) -> ExperimentRecord: ...
    def get_experiment(self, experiment_id: str) -> ExperimentRecord: ...
    def find_experiment(self, project_id: str, name: str) -> ExperimentRecord: ...
    def list_experiments(self, project_id: str) -> list[ExperimentSummary]: ...


class PipelineStore(Protocol):
    def ensure_version(
        self, project_id: str, name: str, hash: str, spec: Mapping[str, Any], source: str
    ) -> tuple[PipelineRecord, PipelineVersionRecord]: ...
    def get_version(self, version_id: str) -> tuple[PipelineRecord, PipelineVersionRecord]: ...
    def list_pipelines(self, project_id: str) -> list[PipelineRecord]: ...


class RunStore(Protocol):
    def create_run(self, run: RunRecord) -> None: ...
    def set_run_state(
        self,
        run_id: str,
        state: RunState,
        *,
        at: float,
        error: str | None = None,
        restart: bool = False,
    ) -> RunRecord: ...
    def get_run(self, run_id: str, project_id: str | None = None) -> RunRecord: ...
    def list_runs(
        self,
        project_id: str,
        *,
        experiment_id: str | None = None,
        state: RunState | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunRecord]: ...
    def start_step(self, step_run: StepRunRecord) -> None: ...
    def finish_step(
        self,
        step_run_id: str,
        state: StepState,
        *,
        at: float,
        error: str | None = None,
        log_uri: str | None = None,
        artifacts: Sequence[ArtifactRecord] = (),
        edges: Sequence[LineageEdge] = (),
    ) -> bool: ...
    def add_step(self, step_run: StepRunRecord, edges: Sequence[LineageEdge] = ()) -> None: ...
    def list_steps(self, run_id: str) -> list[StepRunRecord]: ...
    def get_step(self, step_run_id: str) -> StepRunRecord: ...
    def find_cached(self, project_id: str, cache_key: str) -> StepRunRecord | None: ...


class ArtifactCatalog(Protocol):
    def add_artifact(self, artifact: ArtifactRecord, edges: Sequence[LineageEdge] = ()) -> None: ...
    def get_artifact(self, artifact_id: str, project_id: str | None = None) -> ArtifactRecord: ...
    def step_outputs(self, step_run_id: str) -> dict[str, ArtifactRecord]: ...
    def step_input_ids(self, step_run_id: str) -> list[str]: ...
    def run_artifacts(self, run_id: str) -> list[tuple[StepRunRecord, str, ArtifactRecord]]: ...
    def lineage(self, artifact_id: str) -> Lineage: ...


class TrackingStore(Protocol):
    def log_params(
        self, run_id: str, params: Mapping[str, str], step_run_id: str | None = None
    ) -> None: ...
    def copy_step_tracking(
        self, source_step_run_id: str, run_id: str, step_run_id: str
    ) -> None: ...
    def log_metrics(self, metrics: Sequence[MetricRecord]) -> None: ...
    def get_params(self, run_id: str) -> dict[str, str]: ...
    def metric_history(self, run_id: str, key: str | None = None) -> list[MetricRecord]: ...
    def latest_metrics(self, run_id: str) -> dict[str, float]: ...
