"""Client calls for an executor outside the server (a Kubeflow Pipelines pod) that
records its runs there: the run of an outside job, object uploads, finished step runs
and the job's end. The server side is `treadle.server.routes.external`."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from treadle.client.transport import Transport, segment
from treadle.store.records import ArtifactRecord, MetricRecord, RunRecord, StepRunRecord
from treadle.types import RunState

PROOF_PREFIX = b"treadle-object-proof\n"


def object_proof(run_id: str, data: bytes) -> str:
    """What shows the server that the caller recording into `run_id` holds `data`:
    objects are shared by content across projects, so a new artifact of a project must
    come with the bytes' proof, not just their hash."""
    return hashlib.sha256(PROOF_PREFIX + run_id.encode() + b"\n" + data).hexdigest()


def _artifact(record: ArtifactRecord, proofs: Mapping[str, str]) -> dict[str, object]:
    return {
        "id": record.id,
        "name": record.name,
        "sha256": record.sha256,
        "materializer": record.materializer,
        "kind": record.kind,
        "python_type": record.python_type,
        "proof": proofs.get(record.sha256),
    }


class ExternalApi(Transport):
    def external_run(
        self,
        external_id: str,
        pipeline: str,
        *,
        executor: str = "kfp",
        name: str | None = None,
        experiment: str | None = None,
        params: Mapping[str, str] | None = None,
    ) -> RunRecord:
        """The treadle run of the outside job `external_id` (created by the first call,
        the same run afterwards; every call renews its lease)."""
        body = {
            "external_id": external_id,
            "pipeline": pipeline,
            "executor": executor,
            "name": name,
            "experiment": experiment,
            "params": dict(params or {}),
        }
        return self._call(RunRecord, "POST", self._in_project("/external/runs"), json=body)

    def upload_object(self, data: bytes) -> str:
        """Store `data` on the server under its sha256 (returned); a no-op if it is there."""
        sha = hashlib.sha256(data).hexdigest()
        answer = self._call(
            dict[str, object],
            "POST",
            self._in_project("/external/objects"),
            params={"sha256": sha},
            content=data,
            headers={"content-type": "application/octet-stream"},
        )
        return str(answer["sha256"])

    def record_step(
        self,
        run_id: str,
        step: StepRunRecord,
        *,
        log: str = "",
        outputs: Mapping[str, ArtifactRecord] | None = None,
        inputs: Mapping[str, Sequence[ArtifactRecord]] | None = None,
        metrics: Sequence[MetricRecord] = (),
        params: Mapping[str, str] | None = None,
        proofs: Mapping[str, str] | None = None,
    ) -> StepRunRecord:
        """Record a finished step run (`step`, as the executor recorded it) of an outside
        job's run, with its outputs and the artifacts it read (their objects uploaded,
        `proofs` by sha256 from `object_proof` for the ones new to the project), metrics,
        params and log. Returns the step run the server holds: this one, or the one
        already recorded when the call repeats an earlier one."""
        given = proofs or {}
        body = {
            "id": step.id,
            "node": step.node,
            "step_name": step.step_name,
            "state": step.state.value,
            "started_at": step.started_at,
            "ended_at": step.ended_at,
            "error": step.error,
            "log": log,
            "outputs": {name: _artifact(a, given) for name, a in (outputs or {}).items()},
            "inputs": {
                name: [_artifact(a, given) for a in records]
                for name, records in (inputs or {}).items()
            },
            "metrics": [
                {"key": m.key, "value": m.value, "step": m.step, "timestamp": m.timestamp}
                for m in metrics
            ],
            "params": dict(params or {}),
        }
        return self._call(StepRunRecord, "POST", self._run_path(run_id, "/steps"), json=body)

    def finish_external_run(
        self, run_id: str, state: RunState | str, error: str | None = None
    ) -> RunRecord:
        """Set how an outside job ended: SUCCEEDED, FAILED or CANCELLED."""
        value = state.value if isinstance(state, RunState) else str(state)
        return self._call(
            RunRecord,
            "POST",
            self._run_path(run_id, "/finish"),
            json={"state": value, "error": error},
        )

    def _run_path(self, run_id: str, path: str) -> str:
        return self._in_project(f"/external/runs/{segment(run_id)}{path}")
