"""The runner: turns a traced pipeline into a recorded run.

It schedules ready steps on an executor (parallel where the graph allows), answers
from the cache when a step's key was computed before, retries with backoff, enforces
timeouts, expands fan-outs when their list is known, and records the run's state.
A failed or interrupted run keeps every finished step, so `resume` re-runs only the
rest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import threading
import time
import traceback
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

from treadle.config import Settings
from treadle.dsl import Node, Pipeline, Step, Traced, format_param
from treadle.dsl.graph import (
    Binding,
    Collect,
    Literal,
    blocked_by,
    ready_nodes,
    to_spec,
    version_hash,
)
from treadle.engine import capture
from treadle.engine.cache import cache_key
from treadle.engine.events import Event, EventSink, ignore
from treadle.engine.executors import Executor, default_workers, make_executor
from treadle.engine.loader import version_pipeline
from treadle.engine.task import ArtifactInput, StepResult, StepTask, TaskInput
from treadle.errors import ConflictError, InvalidInputError, NotFoundError
from treadle.packaging import parse_source
from treadle.store import Store, materializers
from treadle.store.records import (
    LineageEdge,
    PipelineVersionRecord,
    RunRecord,
    StepRunRecord,
    new_id,
)
from treadle.tracking.heartbeat import STALE_SECONDS, Heartbeat
from treadle.tracking.run import Run, latest_attempts
from treadle.types import RunState, StepState


@dataclasses.dataclass(frozen=True)
class RunOptions:
    experiment: str | None = None
    name: str | None = None
    executor: str | None = None
    max_workers: int | None = None
    use_cache: bool = True
    on_event: EventSink = ignore
    cancel: threading.Event | None = None
    """Set it to stop the run: running steps are abandoned and the run is CANCELLED."""
    cause: dict[str, Any] | None = None
    """Why the run happens (recorded on it); by default a manual run by the user."""


class _Cancelled(Exception):
    """The run's cancel event was set."""


@dataclasses.dataclass
class _Unit:
    """One step run to make: a node, or one item of a fan-out node."""

    node: Node
    name: str
    index: int | None
    inputs: dict[str, TaskInput]
    key: str
    attempt: int = 0
    """The attempt number recorded on the step run; it continues across resumes."""
    tries: int = 0
    """Attempts made in this execution, counted against `retries`."""
    task: StepTask | None = None
    future: Future[StepResult] | None = None
    deadline: float | None = None
    retry_at: float | None = None
    outputs: dict[str, ArtifactInput] | None = None
    error_line: str | None = None


def _source_file(step: Step[Any, Any]) -> str | None:
    module = sys.modules.get(step.fn.__module__)
    return getattr(module, "__file__", None)


class _Execution:
    def __init__(
        self,
        store: Store,
        traced: Traced,
        run: RunRecord,
        executor: Executor,
        options: RunOptions,
        previous: dict[str, StepRunRecord],
    ) -> None:
        self.store = store
        self.graph = traced.graph
        self.steps = traced.steps
        self.run = run
        self.executor = executor
        self.options = options
        self.emit = options.on_event
        # a resume reuses what finished and numbers new attempts after the old ones
        self.previous = previous
        self.workers = options.max_workers or default_workers()
        self.node_units: dict[str, list[_Unit]] = {}
        self.node_outputs: dict[str, dict[str, Any]] = {}
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self.started: set[str] = set()
        self.queue: deque[_Unit] = deque()
        self.running: dict[Future[StepResult], _Unit] = {}
        self.waiting_retry: list[_Unit] = []
        self.item_hashes: dict[tuple[str, int], str] = {}
        self.total = len(self.graph.nodes)
        self.abandoned = 0

    # -- inputs -----------------------------------------------------------------------

    def _resolve(self, binding: Binding) -> TaskInput:
        if isinstance(binding, Literal):
            return TaskInput(value=binding.value)
        if isinstance(binding, Collect):
            return TaskInput(items=tuple(self._resolve(i) for i in binding.items))
        produced = self.node_outputs[binding.node][binding.output]
        if isinstance(produced, list):  # the outputs of a fan-out, joined
            return TaskInput(items=tuple(TaskInput(artifact=a) for a in produced))
        return TaskInput(artifact=produced)

    def _fan_out_items(self, node: Node, name: str, binding: TaskInput) -> list[TaskInput]:
        if binding.artifact is None:
            if binding.items is not None:
                return list(binding.items)
            return [TaskInput(value=v) for v in binding.value]
        art = binding.artifact
        values = materializers.load(
            art.materializer,
            art.sha256,
            self.store.objects,
            allow_pickle=bool(node.options.get("allow_pickle")),
        )
        try:
            count = len(values)
        except TypeError:
            raise InvalidInputError(
                f"step {node.name!r} maps over input {name!r}, which is a "
                f"{type(values).__name__}, not a list"
            ) from None
        items = []
        for i in range(count):
            try:
                self.item_hashes[(art.sha256, i)] = hashlib.sha256(
                    materializers.to_json_bytes(values[i])
                ).hexdigest()
            except (TypeError, ValueError):
                pass
            items.append(TaskInput(artifact=dataclasses.replace(art, index=i)))
        return items

    # -- scheduling -------------------------------------------------------------------

    def _start_node(self, node: Node) -> None:
        self.started.add(node.name)
        inputs = {k: self._resolve(v) for k, v in node.inputs.items()}
        if not node.is_map:
            units = [self._unit(node, node.name, None, inputs)]
        else:
            lists = {k: self._fan_out_items(node, k, inputs[k]) for k in node.mapped}
            lengths = {len(v) for v in lists.values()}
            if len(lengths) > 1:
                raise InvalidInputError(
                    f"step {node.name!r} maps over lists of different lengths: "
                    + ", ".join(f"{k}={len(v)}" for k, v in lists.items())
                )
            count = lengths.pop() if lengths else 0
            units = [
                self._unit(
                    node,
                    f"{node.name}[{i}]",
                    i,
                    {**inputs, **{k: lists[k][i] for k in node.mapped}},
                )
                for i in range(count)
            ]
            self.total += count - 1
        self.node_units[node.name] = units
        if not units:
            self._node_finished(node)
        for unit in units:
            self._begin(unit)

    def _unit(
        self, node: Node, name: str, index: int | None, inputs: dict[str, TaskInput]
    ) -> _Unit:
        return _Unit(node, name, index, inputs, cache_key(node, inputs, self.item_hashes))

    def _input_edges(self, unit: _Unit, step_run_id: str) -> list[LineageEdge]:
        return [
            LineageEdge(a.artifact_id, step_run_id, "input", name)
            for name, value in unit.inputs.items()
            for a in value.artifacts()
        ]

    def _reuse_outputs(self, unit: _Unit, record: StepRunRecord) -> dict[str, ArtifactInput]:
        found = self.store.artifacts.step_outputs(record.id)
        if any(o not in found for o in unit.node.outputs):
            return {}
        return {
            name: ArtifactInput(a.id, a.sha256, a.uri, a.materializer)
            for name, a in found.items()
            if name in unit.node.outputs
        }

    def _begin(self, unit: _Unit) -> None:
        previous = self.previous.get(unit.name)
        if previous is not None and not previous.state.done:
            unit.attempt = previous.attempt
        elif previous is not None:
            outputs = self._reuse_outputs(unit, previous)
            if outputs or not unit.node.outputs:
                self.emit(
                    Event("step_reused", self.run.id, unit.name, unit.node.name, total=self.total)
                )
                self._unit_succeeded(unit, outputs)
                return
        if self.options.use_cache and unit.node.options.get("cache", True):
            hit = self.store.runs.find_cached(self.run.project_id, unit.key)
            if hit is not None:
                outputs = self._reuse_outputs(unit, hit)
                if (outputs or not unit.node.outputs) and all(
                    self.store.objects.exists(o.sha256) for o in outputs.values()
                ):
                    self._record_cached(unit, hit, outputs)
                    return
        self.queue.append(unit)

    def _record_cached(
        self, unit: _Unit, hit: StepRunRecord, outputs: dict[str, ArtifactInput]
    ) -> None:
        now = time.time()
        step_run_id = new_id()
        edges = self._input_edges(unit, step_run_id) + [
            LineageEdge(a.artifact_id, step_run_id, "output", name) for name, a in outputs.items()
        ]
        self.store.runs.add_step(
            StepRunRecord(
                id=step_run_id,
                run_id=self.run.id,
                project_id=self.run.project_id,
                node=unit.name,
                step_name=unit.node.step,
                attempt=1,
                state=StepState.CACHED,
                started_at=now,
                ended_at=now,
                cache_key=unit.key,
                cached_from=hit.id,
            ),
            edges,
        )
        self.store.tracking.copy_step_tracking(hit.id, self.run.id, step_run_id)
        self.emit(
            Event(
                "step_cached",
                self.run.id,
                unit.name,
                unit.node.name,
                total=self.total,
                message=hit.run_id,
            )
        )
        self._unit_succeeded(unit, outputs)

    def _launch(self, unit: _Unit) -> None:
        unit.attempt += 1
        unit.tries += 1
        unit.retry_at = None
        step = self.steps[unit.node.name]
        unit.task = StepTask(
            run_id=self.run.id,
            project_id=self.run.project_id,
            step_run_id=new_id(),
            node=unit.node.name,
            unit=unit.name,
            step_name=unit.node.step,
            step_ref=unit.node.ref,
            source_file=_source_file(step),
            attempt=unit.attempt,
            inputs=unit.inputs,
            outputs=tuple((o.name, o.kind.value if o.kind else None) for o in step.outputs),
            cache_key=unit.key,
            allow_pickle=bool(unit.node.options.get("allow_pickle")),
            settings=self.store.settings,
        )
        timeout = unit.node.options.get("timeout")
        unit.deadline = time.monotonic() + timeout if timeout else None
        unit.future = self.executor.submit(unit.task)
        self.running[unit.future] = unit
        self.emit(
            Event(
                "step_started",
                self.run.id,
                unit.name,
                unit.node.name,
                attempt=unit.attempt,
                total=self.total,
            )
        )

    # -- outcomes ---------------------------------------------------------------------

    def _unit_succeeded(self, unit: _Unit, outputs: dict[str, ArtifactInput]) -> None:
        unit.outputs = outputs
        units = self.node_units[unit.node.name]
        if all(u.outputs is not None for u in units):
            self._node_finished(unit.node)

    def _node_finished(self, node: Node) -> None:
        units = self.node_units[node.name]
        if node.is_map:
            self.node_outputs[node.name] = {
                o: [u.outputs[o] for u in units if u.outputs is not None] for o in node.outputs
            }
        else:
            self.node_outputs[node.name] = dict(units[0].outputs or {})
        self.done.add(node.name)

    def _unit_failed(self, unit: _Unit, error_line: str) -> None:
        retries = int(unit.node.options.get("retries") or 0)
        unit.error_line = error_line
        if unit.tries <= retries:
            delay = float(unit.node.options.get("retry_delay", 1.0)) * float(
                unit.node.options.get("retry_backoff", 2.0)
            ) ** (unit.tries - 1)
            unit.retry_at = time.monotonic() + delay
            self.waiting_retry.append(unit)
            self.emit(
                Event(
                    "step_retrying",
                    self.run.id,
                    unit.name,
                    unit.node.name,
                    attempt=unit.attempt,
                    message=f"{error_line} (retry in {delay:.1f}s)",
                    total=self.total,
                )
            )
            return
        self.failed.add(unit.node.name)
        self.emit(
            Event(
                "step_failed",
                self.run.id,
                unit.name,
                unit.node.name,
                attempt=unit.attempt,
                message=error_line,
                total=self.total,
            )
        )

    def _collect(self, future: Future[StepResult]) -> None:
        unit = self.running.pop(future)
        assert unit.task is not None
        try:
            result = future.result()
        except Exception as exc:  # the executor itself failed, not the step
            result = StepResult(
                unit.task.step_run_id,
                unit.name,
                ok=False,
                error="".join(traceback.format_exception(exc)),
                error_line=traceback.format_exception_only(exc)[-1].strip(),
                recorded=False,
            )
        if not result.recorded:
            self._record_failure(unit, result.error or result.error_line or "failed")
        if result.ok:
            self.emit(
                Event(
                    "step_finished",
                    self.run.id,
                    unit.name,
                    unit.node.name,
                    attempt=unit.attempt,
                    total=self.total,
                )
            )
            self._unit_succeeded(unit, result.outputs)
        else:
            self._unit_failed(unit, result.error_line or "failed")

    def _record_failure(self, unit: _Unit, error: str) -> None:
        """Record a failure the worker could not: end its step run, or create one if the
        worker died before it started."""
        assert unit.task is not None
        task = unit.task
        if self.store.runs.finish_step(
            task.step_run_id, StepState.FAILED, at=time.time(), error=error
        ):
            return
        try:
            self.store.runs.get_step(task.step_run_id)
        except NotFoundError:
            now = time.time()
            self.store.runs.add_step(
                task.step_run(StepState.FAILED, now, ended_at=now, error=error)
            )

    def _expire(self, now: float) -> None:
        for future, unit in list(self.running.items()):
            if unit.deadline is not None and now >= unit.deadline and unit.task is not None:
                self.running.pop(future)
                self.executor.abandon(unit.task, future)
                self.abandoned += 1
                timeout = unit.node.options.get("timeout")
                self.store.runs.finish_step(
                    unit.task.step_run_id,
                    StepState.FAILED,
                    at=time.time(),
                    error=f"TimeoutError: step {unit.name!r} ran longer than {timeout}s",
                )
                self._unit_failed(unit, f"TimeoutError: ran longer than {timeout}s")

    # -- the loop ---------------------------------------------------------------------

    def run_all(self) -> None:
        cancel = self.options.cancel
        while True:
            if cancel is not None and cancel.is_set():
                raise _Cancelled
            blocked = blocked_by(self.graph, self.failed)
            for name in ready_nodes(self.graph, self.done, self.started | blocked):
                self._start_node(self.graph.nodes[name])
            now = time.monotonic()
            for unit in [u for u in self.waiting_retry if u.retry_at and u.retry_at <= now]:
                self.waiting_retry.remove(unit)
                self.queue.append(unit)
            while self.queue and len(self.running) < self.workers:
                self._launch(self.queue.popleft())
            if not self.running and not self.waiting_retry and not self.queue:
                if not ready_nodes(self.graph, self.done, self.started | blocked):
                    break
                continue
            wakeups = [u.deadline for u in self.running.values() if u.deadline]
            wakeups += [u.retry_at for u in self.waiting_retry if u.retry_at]
            timeout = max(0.0, min(wakeups) - time.monotonic()) if wakeups else None
            if cancel is not None:  # look at the cancel event at least twice a second
                timeout = 0.5 if timeout is None else min(timeout, 0.5)
            finished, _ = wait(list(self.running), timeout=timeout, return_when=FIRST_COMPLETED)
            for future in finished:
                self._collect(future)
            self._expire(time.monotonic())
        for name in sorted(blocked_by(self.graph, self.failed)):
            self.emit(Event("step_skipped", self.run.id, name, name, total=self.total))

    def interrupt(self) -> None:
        """Ctrl-C: stop what runs, mark it CANCELLED; finished steps stay for a resume."""
        for future, unit in list(self.running.items()):
            if unit.task is not None:
                self.executor.abandon(unit.task, future)
                self.store.runs.finish_step(
                    unit.task.step_run_id, StepState.CANCELLED, at=time.time(), error="interrupted"
                )
        self.running.clear()

    def failure_summary(self) -> str | None:
        if not self.failed:
            return None
        parts = []
        for name in sorted(self.failed):
            lines = [u.error_line for u in self.node_units.get(name, []) if u.error_line]
            parts.append(f"step {name!r} failed: {lines[0] if lines else 'failed'}")
        return "; ".join(parts)


def _execute(
    store: Store,
    traced: Traced,
    run: RunRecord,
    executor: Executor,
    options: RunOptions,
    previous: dict[str, StepRunRecord],
) -> Run:
    execution = _Execution(store, traced, run, executor, options, previous)
    options.on_event(
        Event(
            "run_started",
            run.id,
            total=execution.total,
            message=f"{run.name} (attempt {run.attempt})",
        )
    )
    try:
        with capture.routing(), Heartbeat(store, run.id):
            execution.run_all()
    except KeyboardInterrupt:
        execution.interrupt()
        executor.shutdown(wait=False)
        store.runs.set_run_state(
            run.id, RunState.CANCELLED, at=time.time(), error="interrupted by the user"
        )
        options.on_event(Event("run_finished", run.id, message=RunState.CANCELLED.value))
        raise
    except _Cancelled:
        execution.interrupt()
        executor.shutdown(wait=False)
        store.runs.set_run_state(run.id, RunState.CANCELLED, at=time.time(), error="cancelled")
        options.on_event(Event("run_finished", run.id, message=RunState.CANCELLED.value))
        return Run(store, store.runs.get_run(run.id))
    except BaseException as exc:
        execution.interrupt()
        executor.shutdown(wait=False)
        store.runs.set_run_state(
            run.id, RunState.FAILED, at=time.time(), error="".join(traceback.format_exception(exc))
        )
        options.on_event(Event("run_finished", run.id, message=RunState.FAILED.value))
        raise
    executor.shutdown(wait=execution.abandoned == 0)
    summary = execution.failure_summary()
    state = RunState.FAILED if summary else RunState.SUCCEEDED
    store.runs.set_run_state(run.id, state, at=time.time(), error=summary)
    options.on_event(Event("run_finished", run.id, message=state.value, total=execution.total))
    return Run(store, store.runs.get_run(run.id))


def _pipeline_source(pipeline: Pipeline[Any, Any], source_file: str | None) -> str:
    module = sys.modules.get(pipeline.fn.__module__)
    path = source_file or getattr(module, "__file__", None)
    if path and (
        pipeline.fn.__module__.startswith("treadle_user_") or pipeline.fn.__module__ == "__main__"
    ):
        return f"{path}:{pipeline.fn.__qualname__}"
    return pipeline.ref


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """A run recorded and ready to execute: what `plan_run` checked and wrote."""

    traced: Traced
    run: RunRecord
    executor: Executor


def plan_run(
    pipeline: Pipeline[Any, Any],
    params: dict[str, Any],
    store: Store,
    options: RunOptions = RunOptions(),
    source_file: str | None = None,
    version: PipelineVersionRecord | None = None,
) -> PlannedRun:
    """Check the parameters, trace the pipeline and record the run (RUNNING). Nothing is
    written if the parameters, the graph or the executor are wrong. A run of a recorded
    `version` (a deployed package) is filed under it; otherwise the traced graph names
    its version."""
    resolved = pipeline.resolve_params(params)
    traced = pipeline.build(**resolved)
    settings: Settings = store.settings
    project = store.projects.ensure_project(settings.project, settings.user)
    experiment = store.projects.ensure_experiment(
        project.id, options.experiment or settings.experiment, settings.user
    )
    if version is None:
        _, version = store.pipelines.ensure_version(
            project.id,
            pipeline.name,
            version_hash(traced.graph),
            to_spec(traced.graph),
            _pipeline_source(pipeline, source_file),
        )
    now = time.time()
    run = RunRecord(
        id=new_id(),
        project_id=project.id,
        experiment_id=experiment.id,
        pipeline_version_id=version.id,
        name=options.name or f"{pipeline.name}-{time.strftime('%Y%m%d-%H%M%S')}",
        state=RunState.RUNNING,
        created_by=settings.user,
        executor=options.executor or settings.executor,
        attempt=1,
        created_at=now,
        started_at=now,
        heartbeat_at=now,
        cause=options.cause or {"kind": "manual", "by": settings.user},
    )
    # an unknown executor is refused before anything is recorded
    executor = make_executor(run.executor, store, traced.steps)
    store.runs.create_run(run)
    store.tracking.log_params(run.id, {k: format_param(v) for k, v in resolved.items()})
    return PlannedRun(traced, run, executor)


def execute_planned(store: Store, planned: PlannedRun, options: RunOptions = RunOptions()) -> Run:
    """Execute a run that `plan_run` recorded."""
    return _execute(store, planned.traced, planned.run, planned.executor, options, previous={})


def run_pipeline(
    pipeline: Pipeline[Any, Any],
    params: dict[str, Any],
    store: Store,
    options: RunOptions = RunOptions(),
    source_file: str | None = None,
) -> Run:
    """Trace `pipeline` with `params`, record a new run and execute it."""
    return execute_planned(store, plan_run(pipeline, params, store, options, source_file), options)


def resume_run(
    run_id: str,
    store: Store,
    options: RunOptions = RunOptions(),
    pipeline: Pipeline[Any, Any] | None = None,
) -> Run:
    """Run again what did not finish in a FAILED or CANCELLED run; finished steps are
    reused as they are. The pipeline is loaded from where the run recorded it (or given),
    so a step fixed since the failure runs its new code."""
    run = store.runs.get_run(
        run_id, store.projects.ensure_project(store.settings.project, store.settings.user).id
    )
    store.runs.fail_stale(time.time() - STALE_SECONDS, time.time())
    run = store.runs.get_run(run.id)
    if not run.state.resumable:
        raise ConflictError(
            f"run {run.id[:8]} is {run.state.value}; only FAILED or CANCELLED runs resume",
            "start a new run with `treadle run`"
            if run.state is RunState.SUCCEEDED
            else "wait for it to finish",
        )
    if run.pipeline_version_id is None:
        raise ConflictError(f"run {run.id[:8]} was not a pipeline run; it cannot resume")
    _, version = store.pipelines.get_version(run.pipeline_version_id)
    if pipeline is None:
        pipeline, _ = version_pipeline(store, version)
    # steps may have logged params of their own; only the pipeline's are re-applied
    recorded = store.tracking.get_params(run.id)
    params = pipeline.parse_params(
        {k: v for k, v in recorded.items() if k in pipeline.signature.parameters}
    )
    traced = pipeline.build(**params)
    if parse_source(version.source) is None and version_hash(traced.graph) != version.hash:
        options.on_event(
            Event(
                "notice",
                run.id,
                message="the pipeline's code changed since "
                "this run started; unfinished steps run the current code",
            )
        )
    executor = make_executor(options.executor or run.executor, store, traced.steps)
    previous = latest_attempts(store.runs.list_steps(run.id))
    record = store.runs.set_run_state(run.id, RunState.RUNNING, at=time.time(), restart=True)
    return _execute(
        store, traced, record, executor, dataclasses.replace(options, name=None), previous
    )
