"""What the metadata store holds, as frozen dataclasses: one per noun."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from treadle.types import RunState, StepState


def new_id() -> str:
    return uuid.uuid4().hex


@dataclasses.dataclass(frozen=True)
class ProjectRecord:
    id: str
    name: str
    created_at: float
    created_by: str


@dataclasses.dataclass(frozen=True)
class ExperimentRecord:
    id: str
    project_id: str
    name: str
    created_at: float
    created_by: str
    description: str = ""


@dataclasses.dataclass(frozen=True)
class ExperimentSummary:
    experiment: ExperimentRecord
    run_count: int
    last_run_at: float | None


@dataclasses.dataclass(frozen=True)
class PipelineRecord:
    id: str
    project_id: str
    name: str
    created_at: float
    current_version_id: str | None = None
    """The version submitted and scheduled runs execute (set by a deploy or a rollback);
    None means the newest."""


@dataclasses.dataclass(frozen=True)
class PipelineVersionRecord:
    id: str
    pipeline_id: str
    hash: str
    spec: dict[str, Any]
    source: str
    created_at: float


@dataclasses.dataclass(frozen=True)
class DeployedPackage:
    """A pipeline package registered as a version of its pipeline."""

    pipeline: PipelineRecord
    version: PipelineVersionRecord
    package_sha256: str
    """The package file's sha256; the version is its content hash (`version.hash`)."""
    created: bool
    """False when the project already had this version (the same source, built again)."""


@dataclasses.dataclass(frozen=True)
class RunRecord:
    id: str
    project_id: str
    experiment_id: str
    pipeline_version_id: str | None
    name: str
    state: RunState
    created_by: str
    executor: str
    attempt: int
    created_at: float
    started_at: float | None = None
    ended_at: float | None = None
    error: str | None = None
    heartbeat_at: float | None = None
    """Last sign of life from whoever executes the run (every few seconds while RUNNING)."""
    cause: dict[str, Any] | None = None
    """Why the run happened: `kind` (manual, schedule, webhook, run.finished,
    model.registered, artifact.created, monitor.alert) and what that kind tells: who,
    which schedule and due time, which trigger and event."""

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at


@dataclasses.dataclass(frozen=True)
class StepRunRecord:
    id: str
    run_id: str
    project_id: str
    node: str
    step_name: str
    attempt: int
    state: StepState
    started_at: float
    cache_key: str | None = None
    cached_from: str | None = None
    ended_at: float | None = None
    error: str | None = None
    log_uri: str | None = None

    @property
    def duration(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.started_at


@dataclasses.dataclass(frozen=True)
class ArtifactRecord:
    """An immutable, content-addressed value produced by a step or logged by a user."""

    id: str
    project_id: str
    name: str
    kind: str
    materializer: str
    python_type: str
    sha256: str
    uri: str
    size: int
    created_at: float
    run_id: str | None = None
    producer_step_run_id: str | None = None


@dataclasses.dataclass(frozen=True)
class LineageEdge:
    """`step_run_id` consumed (direction "input") or produced ("output") `artifact_id`."""

    artifact_id: str
    step_run_id: str
    direction: str
    name: str


@dataclasses.dataclass(frozen=True)
class LineageEntry:
    """One side of an artifact's lineage: the step run that produced or consumed it."""

    step_run: StepRunRecord
    name: str


@dataclasses.dataclass(frozen=True)
class Lineage:
    artifact: ArtifactRecord
    produced_by: list[LineageEntry]
    consumed_by: list[LineageEntry]


@dataclasses.dataclass(frozen=True)
class RunOutput:
    """An artifact a run's step run produced (or reused from the cache), under its output
    name: one row of `ArtifactCatalog.run_artifacts`, as the API sends it."""

    step_run: StepRunRecord
    name: str
    artifact: ArtifactRecord


@dataclasses.dataclass(frozen=True)
class MetricRecord:
    run_id: str
    key: str
    value: float
    step: int
    timestamp: float
    step_run_id: str | None = None


@dataclasses.dataclass(frozen=True)
class RegisteredModelRecord:
    """A named model in a project; its versions are numbered 1, 2, 3…"""

    id: str
    project_id: str
    name: str
    description: str
    created_at: float
    created_by: str


@dataclasses.dataclass(frozen=True)
class ModelVersionRecord:
    """One immutable registration of a model: a packaged manifest and where it came from."""

    id: str
    model_id: str
    version: int
    flavor: str
    manifest_sha: str
    signature: dict[str, Any]
    metrics: dict[str, float]
    run_id: str | None
    step_run_id: str | None
    trusted: bool
    created_at: float
    created_by: str
    description: str = ""


@dataclasses.dataclass(frozen=True)
class AliasRecord:
    """A movable name (`prod`, `staging`) for one version of a model."""

    model_id: str
    alias: str
    version_id: str
    version: int
    updated_at: float
    updated_by: str


@dataclasses.dataclass(frozen=True)
class AliasEventRecord:
    """An alias set (`from_version` None), moved, or deleted (`to_version` None)."""

    id: int
    model_id: str
    alias: str
    from_version: int | None
    to_version: int | None
    at: float
    by: str
    reason: str


@dataclasses.dataclass(frozen=True)
class DeploymentRecord:
    id: str
    project_id: str
    name: str
    model_id: str
    spec: dict[str, Any]
    created_at: float
    created_by: str


@dataclasses.dataclass(frozen=True)
class DeploymentRevisionRecord:
    """What a deployment serves from revision `number` on: its targets (versions, weights)."""

    id: str
    deployment_id: str
    number: int
    targets: list[dict[str, Any]]
    reason: str
    created_at: float
    created_by: str


@dataclasses.dataclass(frozen=True)
class UserRecord:
    id: str
    name: str
    is_admin: bool
    created_at: float
    disabled: bool = False


@dataclasses.dataclass(frozen=True)
class TokenRecord:
    """An API token; only its sha256 is stored, the secret is shown once."""

    id: str
    user_id: str
    name: str
    prefix: str
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None

    def usable(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@dataclasses.dataclass(frozen=True)
class MemberRecord:
    project_id: str
    user_id: str
    user_name: str
    role: str
    created_at: float


@dataclasses.dataclass(frozen=True)
class AuditRecord:
    id: int
    project_id: str | None
    user: str
    action: str
    target_type: str
    target_id: str
    detail: dict[str, Any]
    at: float


# -- automation ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ScheduleRecord:
    """A cron schedule that runs a pipeline's current version."""

    id: str
    project_id: str
    name: str
    pipeline: str
    cron: str
    timezone: str
    params: dict[str, str]
    catchup: str
    """What to do with due times missed (the platform was down, the clock jumped):
    `skip` them, run `once` for the newest, or run `all` of them (up to max_catchup)."""
    max_catchup: int
    concurrency: str
    """When a run of this schedule is still going: `allow` another, `forbid` it (the
    fire is recorded as skipped), or `replace` it (cancel the old one)."""
    paused: bool
    handled_until: float
    """Due times up to here have been fired or let go."""
    created_by: str
    created_at: float


@dataclasses.dataclass(frozen=True)
class ScheduleFireRecord:
    id: str
    schedule_id: str
    due_at: float
    fired_at: float
    run_id: str | None
    outcome: str


@dataclasses.dataclass(frozen=True)
class TriggerRecord:
    """Turns events of one kind into runs of a pipeline's current version."""

    id: str
    project_id: str
    name: str
    kind: str
    pipeline: str
    params: dict[str, str]
    """Parameter values; `$event.a.b` takes field a.b of the event's payload."""
    filter: dict[str, str]
    """Payload fields (dotted paths) an event must have these values at."""
    enabled: bool
    created_by: str
    created_at: float
    has_secret: bool = False
    """Webhook triggers check an HMAC-SHA256 signature made with a secret shown once."""


@dataclasses.dataclass(frozen=True)
class EventRecord:
    id: str
    project_id: str
    kind: str
    key: str
    payload: dict[str, Any]
    created_at: float


@dataclasses.dataclass(frozen=True)
class TriggerFireRecord:
    id: str
    trigger_id: str
    event_id: str
    fired_at: float
    run_id: str | None
    outcome: str


@dataclasses.dataclass(frozen=True)
class CreatedTrigger:
    trigger: TriggerRecord
    secret: str | None
    """A webhook trigger's signing secret: shown this once."""
    hook: str | None
    """Where a webhook trigger takes deliveries."""


@dataclasses.dataclass(frozen=True)
class Fire:
    trigger: str
    event: EventRecord
    run_id: str | None
    outcome: str


@dataclasses.dataclass(frozen=True)
class Why:
    run: RunRecord
    cause: dict[str, Any]
    """Why the run happened (the run's `cause`)."""
    event: EventRecord | None
    """The event a trigger acted on, when one did."""
    summary: str


# -- monitoring ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MonitorRecord:
    """Watches a deployment's prediction log in windows and compares each with the
    reference profile of the model version that served it."""

    id: str
    project_id: str
    name: str
    deployment: str
    window_kind: str
    """`rows` (a window every `window_size` predictions) or `seconds`."""
    window_size: int
    thresholds: dict[str, Any]
    rules: list[str]
    """Alert rules, e.g. `drift: drift_share > 0.3 for 2 windows`."""
    state: str
    """`waiting` (no data yet), `ok`, `alerting`, `no_data` or `error`."""
    detail: str
    cursor: float
    created_by: str
    created_at: float


@dataclasses.dataclass(frozen=True)
class MonitorWindowRecord:
    id: str
    monitor_id: str
    seq: int
    start_ts: float
    end_ts: float
    rows: int
    status: str
    """`ok`, `drift`, or `no_data` (nothing to compare)."""
    stats: dict[str, Any]
    created_at: float


@dataclasses.dataclass(frozen=True)
class AlertRecord:
    id: str
    monitor_id: str
    project_id: str
    name: str
    rule: str
    state: str
    """`firing` or `resolved`."""
    value: float | None
    fired_seq: int
    fired_at: float
    resolved_at: float | None
    event_id: str | None


@dataclasses.dataclass(frozen=True)
class PolicyRecord:
    """A project's automation written down: on an event, run a pipeline, then gate,
    canary and promote (or roll back) what it produced."""

    id: str
    project_id: str
    name: str
    spec: dict[str, Any]
    enabled: bool
    created_by: str
    created_at: float


@dataclasses.dataclass(frozen=True)
class PolicyRunRecord:
    """One time a policy acted on an event, step by step."""

    id: str
    policy_id: str
    project_id: str
    event_id: str
    state: str
    """`running`, `promoted`, `rolled_back`, `not_promoted` or `failed`."""
    step: str
    """The step it is on: run, register, canary, promote, done."""
    steps: list[dict[str, Any]]
    """What each step did: step, status, detail, at, and what it touched."""
    context: dict[str, Any]
    created_at: float
    updated_at: float
