"""Client calls for experiments, runs, step runs, params, metrics, logs and pipelines."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from treadle.client.transport import Transport, segment
from treadle.store.records import (
    DeployedPackage,
    ExperimentRecord,
    ExperimentSummary,
    MetricRecord,
    PipelineRecord,
    PipelineVersionRecord,
    RunRecord,
    StepRunRecord,
)
from treadle.types import RunState


class RunsApi(Transport):
    def list_experiments(self) -> list[ExperimentSummary]:
        return self._get(list[ExperimentSummary], self._in_project("/experiments"))

    def get_experiment(self, name: str) -> ExperimentRecord:
        """An experiment by name."""
        return self._get(ExperimentRecord, self._in_project(f"/experiments/{segment(name)}"))

    def list_runs(
        self,
        *,
        experiment: str | None = None,
        state: RunState | str | None = None,
        pipeline_version: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunRecord]:
        """Runs, newest first, of one experiment (by name), state or pipeline version id
        if given."""
        return self._get(
            list[RunRecord],
            self._in_project("/runs"),
            experiment=experiment,
            state=state.value if isinstance(state, RunState) else state,
            pipeline_version=pipeline_version,
            limit=limit,
            offset=offset,
        )

    def get_run(self, run_id: str) -> RunRecord:
        """A run by id or unique prefix."""
        return self._get(RunRecord, self._run(run_id))

    def list_steps(self, run_id: str) -> list[StepRunRecord]:
        """Every attempt of every step of the run."""
        return self._get(list[StepRunRecord], self._run(run_id, "/steps"))

    def get_step(self, step_run_id: str) -> StepRunRecord:
        """A step run by id."""
        return self._get(StepRunRecord, self._step(step_run_id))

    def get_params(self, run_id: str) -> dict[str, str]:
        return self._get(dict[str, str], self._run(run_id, "/params"))

    def metric_history(self, run_id: str, key: str | None = None) -> list[MetricRecord]:
        """Every logged value, by key and step (one key if given)."""
        return self._get(list[MetricRecord], self._run(run_id, "/metrics"), key=key)

    def latest_metrics(self, run_id: str) -> dict[str, float]:
        """Each metric's value at its highest step."""
        return self._get(dict[str, float], self._run(run_id, "/metrics/latest"))

    def log_metrics(
        self,
        run_id: str,
        metrics: Mapping[str, float] | Iterable[MetricRecord],
        *,
        step: int = 0,
    ) -> int:
        """Store metric values for a run: a {key: value} mapping (all at `step`), or
        MetricRecords. Returns how many were stored."""
        now = time.time()
        rows = (
            [
                {"key": k, "value": float(v), "step": step, "timestamp": now}
                for k, v in metrics.items()
            ]
            if isinstance(metrics, Mapping)
            else [
                {"key": m.key, "value": m.value, "step": m.step, "timestamp": m.timestamp}
                for m in metrics
            ]
        )
        answer = self._call(
            dict[str, int], "POST", self._run(run_id, "/metrics"), json={"metrics": rows}
        )
        return int(answer["stored"])

    def logs(self, run_id: str, step: str | None = None) -> str:
        """What the run's steps printed, and their tracebacks (one step if given)."""
        return self._send("GET", self._run(run_id, "/logs"), params={"step": step}).text

    def list_pipelines(self) -> list[PipelineRecord]:
        return self._get(list[PipelineRecord], self._in_project("/pipelines"))

    def latest_pipeline_version(self, name: str) -> PipelineVersionRecord:
        """The newest version of pipeline `name`."""
        return self._get(
            PipelineVersionRecord, self._in_project(f"/pipelines/{segment(name)}/latest")
        )

    def list_pipeline_versions(self, name: str) -> list[PipelineVersionRecord]:
        """Every version of pipeline `name`, oldest first."""
        return self._get(
            list[PipelineVersionRecord], self._in_project(f"/pipelines/{segment(name)}/versions")
        )

    def deploy_package(
        self,
        package: bytes | str | os.PathLike[str],
        *,
        current: bool = True,
        forced: str | None = None,
        pipeline: str | None = None,
    ) -> DeployedPackage:
        """Register a pipeline package (its bytes or its path) as a version of its
        pipeline, and make it the version submitted runs execute unless `current` is
        False; runs of that version execute the package's code. `forced` says, for the
        audit log, why a promotion check was skipped. With `pipeline`, a package built
        for another pipeline is refused."""
        data = package if isinstance(package, bytes) else Path(package).read_bytes()
        return self._call(
            DeployedPackage,
            "POST",
            self._in_project("/pipelines/packages"),
            params={"current": str(current).lower(), "forced": forced, "pipeline": pipeline},
            content=data,
            headers={"content-type": "application/zip"},
        )

    def set_current_pipeline_version(
        self, name: str, version: str, reason: str = ""
    ) -> PipelineRecord:
        """Make a version (id, hash or hash prefix) the one submitted runs execute."""
        return self._call(
            PipelineRecord,
            "PUT",
            self._in_project(f"/pipelines/{segment(name)}/current"),
            json={"pipeline_version": version, "reason": reason},
        )

    def submit_run(
        self,
        pipeline: str,
        params: Mapping[str, object] | None = None,
        *,
        experiment: str | None = None,
        name: str | None = None,
        version: str | None = None,
        executor: str | None = None,
        workers: int | None = None,
        use_cache: bool = True,
    ) -> RunRecord:
        """Run `pipeline` on the server, its newest version or the version id given
        (parameters as `-p` takes them); returns the recorded run at once, while it
        executes there."""
        body = {
            "version": version,
            "pipeline": pipeline,
            "params": {
                k: v if isinstance(v, str) else json.dumps(v) for k, v in (params or {}).items()
            },
            "experiment": experiment,
            "name": name,
            "executor": executor,
            "workers": workers,
            "use_cache": use_cache,
        }
        return self._call(RunRecord, "POST", self._in_project("/runs"), json=body)

    def cancel_run(self, run_id: str) -> RunRecord:
        """Stop a run the server is executing; it ends CANCELLED."""
        return self._call(RunRecord, "POST", self._run(run_id, "/cancel"))

    def resume_run(self, run_id: str) -> RunRecord:
        """Finish a FAILED or CANCELLED run on the server."""
        return self._call(RunRecord, "POST", self._run(run_id, "/resume"))

    def get_pipeline_version(self, version_id: str) -> PipelineVersionRecord:
        """A pipeline version by id: its spec and source."""
        return self._get(
            PipelineVersionRecord, self._in_project(f"/pipeline-versions/{segment(version_id)}")
        )
