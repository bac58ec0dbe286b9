"""Executing one step: load its inputs, call it with logs captured and tracking active,
save its outputs, and record every state change. Runs wherever the executor puts it."""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping
from typing import Any

from treadle.dsl import Step
from treadle.engine.capture import capture
from treadle.engine.loader import import_step
from treadle.engine.task import ArtifactInput, StepResult, StepTask, TaskInput
from treadle.errors import InvalidInputError
from treadle.store import Store, materializers
from treadle.store.records import ArtifactRecord, LineageEdge, new_id
from treadle.tracking.context import ActiveRun, activate, deactivate
from treadle.types import ArtifactKind, StepState


def _load_input(value: TaskInput, store: Store, allow_pickle: bool) -> Any:
    if value.artifact is not None:
        art = value.artifact
        loaded = materializers.load(
            art.materializer,
            store.objects.sha_of(art.uri),
            store.objects,
            allow_pickle=allow_pickle,
        )
        return loaded if art.index is None else loaded[art.index]
    if value.items is not None:
        return [_load_input(i, store, allow_pickle) for i in value.items]
    return value.value


def _split_outputs(task: StepTask, returned: Any) -> dict[str, Any]:
    names = [name for name, _ in task.outputs]
    if not names:
        return {}
    if len(names) == 1:
        return {names[0]: returned}
    if not isinstance(returned, tuple) or len(returned) != len(names):
        raise InvalidInputError(
            f"step {task.step_name!r} declares {len(names)} outputs ({', '.join(names)}) "
            f"but returned {type(returned).__name__}",
            "return a tuple with one value per output",
        )
    return dict(zip(names, returned, strict=True))


def _log_metrics_output(ctx: ActiveRun, value: Any) -> None:
    if isinstance(value, Mapping):
        for key, v in value.items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                ctx.metrics.add(str(key), float(v), None)


def execute(task: StepTask, store: Store, step: Step[Any, Any] | None = None) -> StepResult:
    """Run one attempt of one step and record it. Never raises for a failure of the
    step itself: the failure is recorded and returned."""
    started = time.time()
    store.runs.start_step(task.step_run(StepState.RUNNING, started))
    edges = [
        LineageEdge(a.artifact_id, task.step_run_id, "input", name)
        for name, value in task.inputs.items()
        for a in value.artifacts()
    ]
    hashes = tuple(a.sha256 for value in task.inputs.values() for a in value.artifacts())
    ctx = ActiveRun.open(store, task.run_id, task.project_id, task.step_run_id, task.unit, hashes)
    log_text = ""
    try:
        with capture() as buf:
            try:
                fn = (step or import_step(task.step_ref, task.source_file)).fn
                kwargs = {
                    k: _load_input(v, store, task.allow_pickle) for k, v in task.inputs.items()
                }
                token = activate(ctx)
                try:
                    returned = fn(**kwargs)
                finally:
                    deactivate(token)
                values = _split_outputs(task, returned)
                artifacts, outputs = [], {}
                for name, kind in task.outputs:
                    saved = materializers.save(
                        values[name],
                        store.objects,
                        allow_pickle=task.allow_pickle,
                        kind=ArtifactKind(kind) if kind else None,
                    )
                    record = ArtifactRecord(
                        id=new_id(),
                        project_id=task.project_id,
                        name=name,
                        kind=saved.kind.value,
                        materializer=saved.materializer,
                        python_type=saved.python_type,
                        sha256=saved.sha256,
                        uri=store.objects.uri(saved.sha256),
                        size=saved.size,
                        created_at=time.time(),
                        run_id=task.run_id,
                        producer_step_run_id=task.step_run_id,
                    )
                    artifacts.append(record)
                    edges.append(LineageEdge(record.id, task.step_run_id, "output", name))
                    outputs[name] = ArtifactInput(
                        record.id, record.sha256, record.uri, record.materializer
                    )
                    if saved.kind is ArtifactKind.METRICS:
                        _log_metrics_output(ctx, values[name])
            finally:
                log_text = buf.getvalue()
        ctx.metrics.flush()
        finished = store.runs.finish_step(
            task.step_run_id,
            StepState.SUCCEEDED,
            at=time.time(),
            log_uri=_save_log(store, log_text),
            artifacts=artifacts,
            edges=edges,
        )
        if not finished:  # the runner gave up on this attempt (timeout) meanwhile
            return StepResult(
                task.step_run_id,
                task.unit,
                ok=False,
                error="abandoned",
                error_line="the step finished after its timeout",
            )
        return StepResult(task.step_run_id, task.unit, ok=True, outputs=outputs)
    except Exception as exc:
        tb = "".join(traceback.format_exception(exc))
        try:
            ctx.metrics.flush()
        except Exception:  # the failure we report matters more than lost metrics
            pass
        store.runs.finish_step(
            task.step_run_id,
            StepState.FAILED,
            at=time.time(),
            error=tb,
            log_uri=_save_log(store, log_text),
            edges=[e for e in edges if e.direction == "input"],
        )
        line = traceback.format_exception_only(exc)[-1].strip()
        return StepResult(task.step_run_id, task.unit, ok=False, error=tb, error_line=line)


def _save_log(store: Store, text: str) -> str | None:
    if not text:
        return None
    sha, _ = store.objects.put_bytes(text.encode())
    return store.objects.uri(sha)
