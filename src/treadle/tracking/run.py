"""`Run`: a handle on a recorded run — its state, params, metrics and outputs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from treadle.store import Store, materializers
from treadle.store.records import ArtifactRecord, MetricRecord, RunRecord, StepRunRecord
from treadle.types import RunState

LOGGED = "logged:"
"""Edge-name prefix of artifacts a step logged with `log_artifact` (not its outputs)."""


def output_key(node: str, output: str, single: bool) -> str:
    return node if single and output == "output" else f"{node}.{output}"


def latest_attempts(steps: list[StepRunRecord]) -> dict[str, StepRunRecord]:
    """The last attempt of each node (step runs come ordered by start time)."""
    latest: dict[str, StepRunRecord] = {}
    for s in steps:
        current = latest.get(s.node)
        if current is None or (s.attempt, s.started_at) >= (current.attempt, current.started_at):
            latest[s.node] = s
    return latest


class Outputs(Mapping[str, Any]):
    """The run's step outputs by `node` (or `node.output` for multi-output steps), each
    loaded from the artifact store only when first read."""

    def __init__(self, store: Store, run_id: str) -> None:
        self._store = store
        self._run_id = run_id
        self._records: dict[str, ArtifactRecord] | None = None
        self._loaded: dict[str, Any] = {}

    def records(self) -> dict[str, ArtifactRecord]:
        if self._records is None:
            rows = self._store.artifacts.run_artifacts(self._run_id)
            latest = latest_attempts([sr for sr, _, _ in rows])
            per_node: dict[str, list[tuple[str, ArtifactRecord]]] = {}
            for sr, name, art in rows:
                if latest.get(sr.node) is not None and latest[sr.node].id == sr.id:
                    per_node.setdefault(sr.node, []).append((name, art))
            records: dict[str, ArtifactRecord] = {}
            for node, items in per_node.items():
                declared = [name for name, _ in items if not name.startswith(LOGGED)]
                for name, art in items:
                    if name.startswith(LOGGED):
                        records[f"{node}.{name.removeprefix(LOGGED)}"] = art
                    else:
                        records[output_key(node, name, len(declared) == 1)] = art
            self._records = records
        return self._records

    def load(self, key: str, *, allow_pickle: bool = False) -> Any:
        if key not in self._loaded:
            try:
                art = self.records()[key]
            except KeyError:
                raise KeyError(
                    f"run {self._run_id[:8]} has no output {key!r}; it has: "
                    f"{', '.join(self.records()) or 'none'}"
                ) from None
            sha = self._store.objects.sha_of(art.uri)
            self._loaded[key] = materializers.load(
                art.materializer, sha, self._store.objects, allow_pickle=allow_pickle
            )
        return self._loaded[key]

    def __getitem__(self, key: str) -> Any:
        return self.load(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.records())

    def __len__(self) -> int:
        return len(self.records())


class Run:
    """A recorded run. Attributes read the store, so they are current when asked."""

    def __init__(self, store: Store, record: RunRecord) -> None:
        self._store = store
        self._record = record
        self.outputs = Outputs(store, record.id)

    @property
    def id(self) -> str:
        return self._record.id

    @property
    def name(self) -> str:
        return self._record.name

    @property
    def record(self) -> RunRecord:
        return self._record

    def refresh(self) -> Run:
        self._record = self._store.runs.get_run(self._record.id)
        self.outputs = Outputs(self._store, self._record.id)
        return self

    @property
    def state(self) -> RunState:
        return self.refresh()._record.state

    @property
    def error(self) -> str | None:
        return self.refresh()._record.error

    @property
    def params(self) -> dict[str, str]:
        return self._store.tracking.get_params(self.id)

    @property
    def metrics(self) -> dict[str, float]:
        """Each metric's latest value."""
        return self._store.tracking.latest_metrics(self.id)

    def metric_history(self, key: str) -> list[MetricRecord]:
        return self._store.tracking.metric_history(self.id, key)

    @property
    def steps(self) -> dict[str, StepRunRecord]:
        """The last attempt of each step, by node name."""
        return latest_attempts(self._store.runs.list_steps(self.id))

    def __repr__(self) -> str:
        return f"<Run {self.id[:8]} {self.name} {self._record.state.value}>"
