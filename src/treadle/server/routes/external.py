"""Runs that an executor outside the server records here: a Kubeflow Pipelines pod (or
any scheduler that runs treadle steps itself) tells the server what it ran.

    POST /projects/{project}/external/runs                 the run of an outside job
    POST /projects/{project}/external/objects?sha256=…     an object's bytes
    POST /projects/{project}/external/runs/{run_id}/steps  a finished step run
    POST /projects/{project}/external/runs/{run_id}/finish how the job ended

Every call may be repeated (a pod is retried, a request times out after the server
acted): the run of an outside job is the same run each time, an object is stored once,
a step run sent again (its `id`, or the same outputs from a retried pod) is answered
with the one recorded, and finishing twice in the same state changes nothing.

Objects are shared by content across projects, so a hash alone must not let a project
claim another project's bytes: an artifact the call adds names its object by sha256
and proves the caller holds those bytes, with `proof` = sha256 of
`treadle-object-proof`, a newline, the run id, a newline, and the bytes.

An outside job gives no heartbeat while no pod runs, so the run holds a lease instead:
every call sets its heartbeat an hour ahead (`LEASE_SECONDS`), and a run silent longer
than that is failed like an abandoned local run. The executor's own word, at the end,
still sets the final state.
"""

from __future__ import annotations

import hashlib
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from treadle.errors import ConflictError, InvalidInputError, NotFoundError
from treadle.server.auth import Access, need, store_of
from treadle.server.routes.runs import MetricIn
from treadle.store import Store
from treadle.store.records import (
    ArtifactRecord,
    LineageEdge,
    MetricRecord,
    RunRecord,
    StepRunRecord,
    new_id,
)
from treadle.types import ArtifactKind, RunState, StepState

router = APIRouter(prefix="/projects/{project}/external", tags=["external"])

OBJECTS = "/external/objects"
"""The suffix of the upload path (the server's guard lets bytes through to it)."""
CAUSE = "external"
LEASE_SECONDS = 3600.0
SHA = r"^[0-9a-f]{64}$"
ID = r"^[0-9a-f]{32}$"
PROOF_PREFIX = b"treadle-object-proof\n"
_UPLOAD_HINT = "upload its bytes first (POST …/external/objects?sha256=…) and send `proof`"


def object_proof(run_id: str, data: bytes) -> str:
    """What shows that the caller recording into `run_id` holds `data`."""
    return hashlib.sha256(PROOF_PREFIX + run_id.encode() + b"\n" + data).hexdigest()


# -- the run ----------------------------------------------------------------------------


class ExternalRunIn(BaseModel):
    external_id: str = Field(min_length=1, max_length=200)
    """The job's id where it runs (a KFP pipeline job uuid): one treadle run per id."""
    pipeline: str = Field(min_length=1, max_length=200)
    """The treadle pipeline the job runs."""
    executor: str = Field(default="kfp", pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    """What runs it; recorded as the run's executor."""
    name: str | None = Field(default=None, min_length=1, max_length=200)
    """The run's name (default: the pipeline's name and the executor)."""
    experiment: str | None = Field(default=None, min_length=1, max_length=200)
    params: dict[str, str] = Field(default_factory=dict, max_length=200)
    """The job's pipeline parameters as `-p` takes them; fixed once logged."""


def external_run_id(project_id: str, executor: str, external_id: str) -> str:
    key = f"{CAUSE}\n{project_id}\n{executor}\n{external_id}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _renew(store: Store, run_id: str) -> None:
    store.runs.heartbeat(run_id, time.time() + LEASE_SECONDS)


@router.post("/runs", response_model=RunRecord)
def external_run(
    body: ExternalRunIn, request: Request, access: Access = Depends(need("editor"))
) -> RunRecord:
    """The treadle run of an outside job, created by the first call for its
    `external_id` (RUNNING) and the same run for every later one, which also renews its
    lease. `params` are logged with it."""
    store = store_of(request)
    project = access.project
    run_id = external_run_id(project.id, body.executor, body.external_id)
    try:
        run = store.runs.get_run(run_id, project.id)
    except NotFoundError:
        run = _create_run(store, access, run_id, body)
    store.tracking.log_params(run.id, body.params)
    _renew(store, run.id)
    return store.runs.get_run(run.id, project.id)


def _create_run(store: Store, access: Access, run_id: str, body: ExternalRunIn) -> RunRecord:
    project = access.project
    experiment = store.projects.ensure_experiment(
        project.id, body.experiment or "default", access.user
    )
    now = time.time()
    record = RunRecord(
        id=run_id,
        project_id=project.id,
        experiment_id=experiment.id,
        pipeline_version_id=None,
        name=body.name or f"{body.pipeline}-{body.executor}",
        state=RunState.RUNNING,
        created_by=access.user,
        executor=body.executor,
        attempt=1,
        created_at=now,
        started_at=now,
        heartbeat_at=now,
        cause={
            "kind": CAUSE,
            "executor": body.executor,
            "external_id": body.external_id,
            "pipeline": body.pipeline,
            "by": access.user,
        },
    )
    try:
        store.runs.create_run(record)
    except InvalidInputError:
        raise
    except Exception:  # a concurrent first call of the same job created it meanwhile
        return store.runs.get_run(run_id, project.id)
    store.audit.record(
        project.id,
        access.user,
        "record-external-run",
        "run",
        run_id,
        {"executor": body.executor, "external_id": body.external_id},
    )
    return record


def _external(store: Store, run_id: str, project_id: str) -> RunRecord:
    run = store.runs.get_run(run_id, project_id)
    if (run.cause or {}).get("kind") != CAUSE:
        raise ConflictError(
            f"run {run.id[:8]} was not started by an outside executor; only those runs "
            "take step runs and a final state through these routes",
            "get the run of an outside job with POST …/external/runs",
        )
    return run


# -- objects ------------------------------------------------------------------------------


class StoredObject(BaseModel):
    sha256: str
    size: int


_BYTES_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.post("/objects", response_model=StoredObject, openapi_extra=_BYTES_BODY)
async def upload_object(
    request: Request,
    sha256: Annotated[str, Query(pattern=SHA)],
    access: Access = Depends(need("editor")),
) -> StoredObject:
    """Store an object's bytes (the body, `application/octet-stream`) under their
    sha256, which must be `sha256`; storing the same bytes again is a no-op. The object
    belongs to no project until a step run records an artifact of it."""
    data = await request.body()
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise InvalidInputError(
            f"sha256: the body hashes to {actual}, not {sha256}",
            "send the object's exact bytes with their sha256 as `sha256`",
        )
    store = store_of(request)
    sha, size = await run_in_threadpool(store.objects.put_bytes, data)
    return StoredObject(sha256=sha, size=size)


# -- step runs ----------------------------------------------------------------------------


class ArtifactIn(BaseModel):
    name: str = Field(min_length=1, max_length=250)
    sha256: str = Field(pattern=SHA)
    materializer: str = Field(min_length=1, max_length=100)
    kind: ArtifactKind = ArtifactKind.VALUE
    python_type: str = Field(default="", max_length=500)
    id: str | None = Field(default=None, pattern=ID)
    """The executor's id for it, kept where free (the steps that read it name it so)."""
    proof: str | None = Field(default=None, pattern=SHA)
    """Needed when the artifact is new to the project (see the module's description)."""


class StepIn(BaseModel):
    node: str = Field(min_length=1, max_length=200)
    """The step's node in the graph, with `[i]` for item i of a fan-out."""
    step_name: str = Field(min_length=1, max_length=200)
    state: Literal["SUCCEEDED", "FAILED"] = "SUCCEEDED"
    id: str | None = Field(default=None, pattern=ID)
    """The executor's id for the step run: sending it again returns the recorded one."""
    started_at: float | None = Field(default=None, ge=0, le=1e11)
    ended_at: float | None = Field(default=None, ge=0, le=1e11)
    error: str | None = Field(default=None, max_length=1_000_000)
    log: str = Field(default="", max_length=8_000_000)
    """What the step printed."""
    outputs: dict[str, ArtifactIn] = Field(default_factory=dict, max_length=1000)
    """What the step made, by output name."""
    inputs: dict[str, list[ArtifactIn]] = Field(default_factory=dict, max_length=1000)
    """What the step read, by input name (a join reads several)."""
    metrics: list[MetricIn] = Field(default_factory=list, max_length=100_000)
    params: dict[str, str] = Field(default_factory=dict, max_length=200)


@router.post("/runs/{run_id}/steps", response_model=StepRunRecord)
def record_step(
    run_id: str, body: StepIn, request: Request, access: Access = Depends(need("editor"))
) -> StepRunRecord:
    """Record a finished step run of an outside job's run: its outputs (artifacts of
    uploaded objects), the artifacts it read (lineage), metrics, params and log. Sent
    again, with the same `id` or as the same outputs of a step run of that node that
    succeeded, it records nothing new and answers with the step run already there."""
    store = store_of(request)
    run = _external(store, run_id, access.project.id)
    return _Recording(store, run, body).record()


class _Recording:
    def __init__(self, store: Store, run: RunRecord, body: StepIn) -> None:
        self.store, self.run, self.body = store, run, body
        self.verified: dict[str, int] = {}
        self.claimed: dict[str, ArtifactRecord] = {}
        """The artifacts this call adds, by id."""

    def record(self) -> StepRunRecord:
        store, run, body = self.store, self.run, self.body
        existing = self._existing()
        if existing is not None and existing.state is not StepState.RUNNING:
            _renew(store, run.id)
            return existing
        step_run_id = existing.id if existing is not None else (body.id or new_id())
        # everything is checked before anything is written
        inputs = {
            name: [self._input(name, i, a) for i, a in enumerate(arts)]
            for name, arts in body.inputs.items()
        }
        outputs = {name: self._output(name, a, step_run_id) for name, a in body.outputs.items()}
        now = time.time()
        started = body.started_at or now
        ended = max(body.ended_at or now, started)
        for records in inputs.values():
            for record, new in records:
                if new:
                    self._add_input(record)
        log_uri = None
        if body.log:
            sha, _ = store.objects.put_bytes(body.log.encode())
            log_uri = store.objects.uri(sha)
        if existing is None:
            attempt = 1 + sum(1 for s in store.runs.list_steps(run.id) if s.node == body.node)
            try:
                store.runs.start_step(
                    StepRunRecord(
                        id=step_run_id,
                        run_id=run.id,
                        project_id=run.project_id,
                        node=body.node,
                        step_name=body.step_name,
                        attempt=attempt,
                        state=StepState.RUNNING,
                        started_at=started,
                    )
                )
            except InvalidInputError:
                raise
            except Exception:  # the same call, sent twice at once, got there first
                return store.runs.get_step(step_run_id)
        self._track(step_run_id, ended)
        edges = [
            LineageEdge(record.id, step_run_id, "input", name)
            for name, records in inputs.items()
            for record, _ in records
        ]
        edges += [LineageEdge(a.id, step_run_id, "output", name) for name, a in outputs.items()]
        store.runs.finish_step(
            step_run_id,
            StepState(body.state),
            at=ended,
            error=body.error,
            log_uri=log_uri,
            artifacts=list(outputs.values()),
            edges=edges,
        )
        _renew(store, run.id)
        return store.runs.get_step(step_run_id)

    def _existing(self) -> StepRunRecord | None:
        """The step run this call repeats, if any: the same id, or (for a success) a
        step run of the same node that succeeded with the very same outputs."""
        store, run, body = self.store, self.run, self.body
        if body.id is not None:
            try:
                found = store.runs.get_step(body.id)
            except NotFoundError:
                found = None
            if found is not None:
                if found.run_id != run.id:
                    raise ConflictError(
                        f"id: step run id {body.id} is taken",
                        "send a new id, or none and the server makes one",
                    )
                return found
        if body.state != "SUCCEEDED":
            return None
        wanted = {name: a.sha256 for name, a in body.outputs.items()}
        for step in store.runs.list_steps(run.id):
            if step.node != body.node or step.state is not StepState.SUCCEEDED:
                continue
            made = store.artifacts.step_outputs(step.id)
            if {name: a.sha256 for name, a in made.items()} == wanted:
                return step
        return None

    def _verify(self, field: str, given: ArtifactIn) -> int:
        """The size of the object `given` names, once the caller proved they hold it."""
        if given.sha256 in self.verified:
            return self.verified[given.sha256]
        unknown = InvalidInputError(
            f"{field}.sha256: no object {given.sha256[:12]} was uploaded with these bytes",
            _UPLOAD_HINT,
        )
        if given.proof is None or not self.store.objects.exists(given.sha256):
            raise unknown
        digest = hashlib.sha256(PROOF_PREFIX + self.run.id.encode() + b"\n")
        size = 0
        with self.store.objects.verified_path(given.sha256).open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
        if digest.hexdigest() != given.proof:
            raise unknown
        self.verified[given.sha256] = size
        return size

    def _free_id(self, wanted: str | None) -> str:
        if wanted is None or wanted in self.claimed:
            return new_id()
        try:
            self.store.artifacts.get_artifact(wanted)
        except NotFoundError:
            return wanted
        return new_id()

    def _add_input(self, record: ArtifactRecord) -> None:
        try:
            self.store.artifacts.add_artifact(record)
        except InvalidInputError:
            raise
        except Exception:
            # a step run of another item of the same fan-out, recorded at the same time,
            # brought in the same artifact first
            known = self.store.artifacts.get_artifact(record.id, self.run.project_id)
            if known.sha256 != record.sha256:
                raise

    def _new_artifact(
        self, field: str, given: ArtifactIn, artifact_id: str, producer: str | None
    ) -> ArtifactRecord:
        self.claimed[artifact_id] = record = ArtifactRecord(
            id=artifact_id,
            project_id=self.run.project_id,
            name=given.name,
            kind=given.kind.value,
            materializer=given.materializer,
            python_type=given.python_type,
            sha256=given.sha256,
            uri=self.store.objects.uri(given.sha256),
            size=self._verify(field, given),
            created_at=time.time(),
            run_id=self.run.id,
            producer_step_run_id=producer,
        )
        return record

    def _input(self, name: str, i: int, given: ArtifactIn) -> tuple[ArtifactRecord, bool]:
        """The artifact an input names: the project's own with that id, or a new one
        (made where the project did not hear of it)."""
        field = f"inputs.{name}.{i}"
        if given.id is not None and given.id in self.claimed:
            brought = self.claimed[given.id]
            if brought.sha256 == given.sha256 and brought.producer_step_run_id is None:
                return brought, False
        if given.id is not None:
            try:
                known = self.store.artifacts.get_artifact(given.id, self.run.project_id)
            except NotFoundError:
                known = None
            if known is not None:
                if known.sha256 != given.sha256:
                    raise InvalidInputError(
                        f"{field}.sha256: artifact {given.id[:8]} holds {known.sha256[:12]}, "
                        f"not {given.sha256[:12]}",
                        "send the artifact's own sha256, or no id",
                    )
                return known, False
        return self._new_artifact(field, given, self._free_id(given.id), None), True

    def _output(self, name: str, given: ArtifactIn, step_run_id: str) -> ArtifactRecord:
        artifact_id = self._free_id(given.id)
        return self._new_artifact(f"outputs.{name}", given, artifact_id, step_run_id)

    def _track(self, step_run_id: str, at: float) -> None:
        store, run, body = self.store, self.run, self.body
        store.tracking.log_params(run.id, body.params, step_run_id)
        if not body.metrics:
            return
        if any(m.step_run_id == step_run_id for m in store.tracking.metric_history(run.id)):
            return  # an earlier call stored them before it was cut short
        store.tracking.log_metrics(
            [
                MetricRecord(run.id, m.key, m.value, m.step, m.timestamp or at, step_run_id)
                for m in body.metrics
            ]
        )


# -- the end ------------------------------------------------------------------------------


class FinishIn(BaseModel):
    state: Literal["SUCCEEDED", "FAILED", "CANCELLED"]
    error: str | None = Field(default=None, max_length=100_000)


@router.post("/runs/{run_id}/finish", response_model=RunRecord)
def finish_run(
    run_id: str, body: FinishIn, request: Request, access: Access = Depends(need("editor"))
) -> RunRecord:
    """Set how an outside job ended; the same state again changes nothing. The
    executor's word wins over the lease (a run failed for its silence is set again)."""
    store = store_of(request)
    run = _external(store, run_id, access.project.id)
    state = RunState(body.state)
    if run.state is state:
        return run
    error = body.error
    if state is not RunState.SUCCEEDED and not error:
        error = f"the {run.executor} job ended {state.value}"
    finished = store.runs.set_run_state(
        run.id, state, at=time.time(), error=None if state is RunState.SUCCEEDED else error
    )
    store.audit.record(
        access.project.id, access.user, "finish-external-run", "run", run.id, {"state": state.value}
    )
    return finished
