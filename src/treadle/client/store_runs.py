"""The read side of the project, pipeline, run, tracking and artifact protocols, over
the API. Writes the engine makes (runs, steps, artifacts) stay local for now and say so."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from treadle.client.index import Index, unsupported
from treadle.errors import NotFoundError
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


class RestProjectStore:
    def __init__(self, index: Index) -> None:
        self._index = index

    def ensure_project(self, name: str, user: str) -> ProjectRecord:
        """The project, which must exist on the server (only its admins create projects)."""
        try:
            return self.get_project(name)
        except NotFoundError as exc:
            raise NotFoundError(
                exc.message,
                "set TREADLE_PROJECT to a project you are a member of "
                "(GET /api/v1/me lists them), or ask a server admin to add you",
            ) from None

    def get_project(self, name: str) -> ProjectRecord:
        return self._index.project(self._index.client.get_project(name))

    def list_projects(self) -> list[ProjectRecord]:
        return [self._index.project(p) for p in self._index.client.list_projects()]

    def ensure_experiment(self, project_id: str, name: str, user: str) -> ExperimentRecord:
        unsupported("creating an experiment")

    def get_experiment(self, experiment_id: str) -> ExperimentRecord:
        return self._index.experiment_by_id(experiment_id)

    def find_experiment(self, project_id: str, name: str) -> ExperimentRecord:
        client = self._index.in_project(project_id)
        return self._index.experiment(client.get_experiment(name))

    def list_experiments(self, project_id: str) -> list[ExperimentSummary]:
        found = self._index.in_project(project_id).list_experiments()
        for s in found:
            self._index.experiment(s.experiment)
        return found


class RestPipelineStore:
    def __init__(self, index: Index) -> None:
        self._index = index

    def ensure_version(
        self, project_id: str, name: str, hash: str, spec: Mapping[str, Any], source: str
    ) -> tuple[PipelineRecord, PipelineVersionRecord]:
        unsupported("recording a pipeline version")

    def get_version(self, version_id: str) -> tuple[PipelineRecord, PipelineVersionRecord]:
        client = self._index.client
        version = client.get_pipeline_version(version_id)
        for pipeline in client.list_pipelines():
            if pipeline.id == version.pipeline_id:
                return pipeline, version
        raise NotFoundError(f"no pipeline with id {version.pipeline_id!r}")

    def list_pipelines(self, project_id: str) -> list[PipelineRecord]:
        return self._index.in_project(project_id).list_pipelines()

    def list_versions(self, project_id: str, name: str) -> list[PipelineVersionRecord]:
        return self._index.in_project(project_id).list_pipeline_versions(name)

    def set_current(self, project_id: str, name: str, version_id: str) -> PipelineRecord:
        return self._index.in_project(project_id).set_current_pipeline_version(name, version_id)

    def latest_version(
        self, project_id: str, name: str
    ) -> tuple[PipelineRecord, PipelineVersionRecord]:
        return self.get_version(self._index.in_project(project_id).latest_pipeline_version(name).id)


class RestRunStore:
    def __init__(self, index: Index) -> None:
        self._index = index

    def create_run(self, run: RunRecord) -> None:
        unsupported("starting a run")

    def set_run_state(
        self,
        run_id: str,
        state: RunState,
        *,
        at: float,
        error: str | None = None,
        restart: bool = False,
    ) -> RunRecord:
        unsupported("changing a run's state")

    def get_run(self, run_id: str, project_id: str | None = None) -> RunRecord:
        return self._index.in_project(project_id).get_run(run_id)

    def heartbeat(self, run_id: str, at: float) -> None:
        unsupported("executing a run")

    def fail_stale(self, silent_since: float, at: float) -> list[RunRecord]:
        unsupported("failing stale runs")

    def list_runs(
        self,
        project_id: str,
        *,
        experiment_id: str | None = None,
        state: RunState | None = None,
        pipeline_version_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunRecord]:
        experiment = (
            self._index.experiment_by_id(experiment_id, project_id).name if experiment_id else None
        )
        return self._index.in_project(project_id).list_runs(
            experiment=experiment,
            state=state,
            pipeline_version=pipeline_version_id,
            limit=limit,
            offset=offset,
        )

    def start_step(self, step_run: StepRunRecord) -> None:
        unsupported("executing a step")

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
    ) -> bool:
        unsupported("executing a step")

    def add_step(self, step_run: StepRunRecord, edges: Sequence[LineageEdge] = ()) -> None:
        unsupported("recording a step")

    def list_steps(self, run_id: str) -> list[StepRunRecord]:
        return self._index.client.list_steps(run_id)

    def get_step(self, step_run_id: str) -> StepRunRecord:
        return self._index.client.get_step(step_run_id)

    def find_cached(self, project_id: str, cache_key: str) -> StepRunRecord | None:
        unsupported("looking up the step cache")


class RestTrackingStore:
    def __init__(self, index: Index) -> None:
        self._index = index

    def log_params(
        self, run_id: str, params: Mapping[str, str], step_run_id: str | None = None
    ) -> None:
        unsupported("logging params")

    def copy_step_tracking(self, source_step_run_id: str, run_id: str, step_run_id: str) -> None:
        unsupported("copying a step's tracking")

    def log_metrics(self, metrics: Sequence[MetricRecord]) -> None:
        by_run: dict[str, list[MetricRecord]] = {}
        for m in metrics:
            by_run.setdefault(m.run_id, []).append(m)
        for run_id, rows in by_run.items():
            self._index.client.log_metrics(run_id, rows)

    def get_params(self, run_id: str) -> dict[str, str]:
        return self._index.client.get_params(run_id)

    def metric_history(self, run_id: str, key: str | None = None) -> list[MetricRecord]:
        return self._index.client.metric_history(run_id, key)

    def latest_metrics(self, run_id: str) -> dict[str, float]:
        return self._index.client.latest_metrics(run_id)


class RestArtifactCatalog:
    def __init__(self, index: Index) -> None:
        self._index = index

    def add_artifact(self, artifact: ArtifactRecord, edges: Sequence[LineageEdge] = ()) -> None:
        unsupported("recording an artifact")

    def get_artifact(self, artifact_id: str, project_id: str | None = None) -> ArtifactRecord:
        return self._index.in_project(project_id).get_artifact(artifact_id)

    def step_outputs(self, step_run_id: str) -> dict[str, ArtifactRecord]:
        return self._index.client.step_outputs(step_run_id)

    def step_input_ids(self, step_run_id: str) -> list[str]:
        return self._index.client.step_input_ids(step_run_id)

    def run_artifacts(self, run_id: str) -> list[tuple[StepRunRecord, str, ArtifactRecord]]:
        return [(o.step_run, o.name, o.artifact) for o in self._index.client.run_outputs(run_id)]

    def lineage(self, artifact_id: str) -> Lineage:
        return self._index.client.lineage(artifact_id)

    def has_object(self, project_id: str, sha: str) -> bool:
        return self._index.in_project(project_id).has_object(sha)
