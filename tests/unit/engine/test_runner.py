"""Real runs against a SQLite store in a temporary home: what the runner records, caches,
retries, times out, resumes, and how the process executor matches the thread one."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import treadle
from treadle.dsl import Pipeline
from treadle.dsl.graph import version_hash
from treadle.engine import Event, RunOptions, resume_run, run_pipeline
from treadle.engine.loader import load_file
from treadle.errors import ConflictError, InvalidInputError
from treadle.store import Store
from treadle.store.records import StepRunRecord
from treadle.tracking import Run
from treadle.types import RunState, StepState

RESOURCES = Path(__file__).resolve().parents[2] / "resources"


def resource(name: str) -> ModuleType:
    """A module of tests/resources, loaded the way `treadle run FILE` loads it."""
    return load_file(RESOURCES / f"{name}.py")


def run(
    pipeline: Pipeline[Any, Any],
    store: Store,
    params: dict[str, Any] | None = None,
    **options: Any,
) -> Run:
    module_file = getattr(pipeline.fn, "__globals__", {}).get("__file__")
    return run_pipeline(pipeline, params or {}, store, RunOptions(**options), module_file)


def all_steps(store: Store, run_id: str) -> list[StepRunRecord]:
    return store.runs.list_steps(run_id)


def attempts_of(store: Store, run_id: str, node: str) -> list[StepRunRecord]:
    return sorted(
        (s for s in all_steps(store, run_id) if s.node == node), key=lambda s: s.started_at
    )


def log_text(store: Store, step_run: StepRunRecord) -> str:
    assert step_run.log_uri is not None, f"step {step_run.node} has no log"
    return store.objects.get_bytes(store.objects.sha_of(step_run.log_uri)).decode()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie still answers signal 0; it has stopped running all the same
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


class Events:
    """An event sink that keeps what it is sent."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def kinds(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]


# -- a linear pipeline -----------------------------------------------------------------


def test_linear_pipeline_records_steps_artifacts_and_lineage(store: Store) -> None:
    basic = resource("eng_basic")
    events = Events()
    result = run(basic.linear, store, {"n": 3, "factor": 2}, on_event=events)

    assert result.state is RunState.SUCCEEDED
    assert result.outputs["summarize"] == 12
    assert result.outputs["load"] == [1, 2, 3]
    assert result.outputs["scale"] == [2, 4, 6]
    assert result.params == {"n": "3", "factor": "2", "offset": "0"}

    steps = all_steps(store, result.id)
    assert sorted(s.node for s in steps) == ["load", "scale", "summarize"]
    for s in steps:
        assert s.state is StepState.SUCCEEDED
        assert s.attempt == 1
        assert s.cached_from is None
        assert s.cache_key
        assert s.ended_at is not None and s.ended_at >= s.started_at

    produced = {sr.node: (name, art) for sr, name, art in store.artifacts.run_artifacts(result.id)}
    assert set(produced) == {"load", "scale", "summarize"}
    by_node = {s.node: s for s in steps}
    for node, (name, art) in produced.items():
        assert name == "output"
        assert art.producer_step_run_id == by_node[node].id
        assert art.run_id == result.id
        assert store.objects.exists(art.sha256)

    # lineage: load's output was read by scale, scale's by summarize
    load_art, scale_art = produced["load"][1], produced["scale"][1]
    assert store.artifacts.step_input_ids(by_node["scale"].id) == [load_art.id]
    assert store.artifacts.step_input_ids(by_node["summarize"].id) == [scale_art.id]
    assert store.artifacts.step_input_ids(by_node["load"].id) == []
    lineage = store.artifacts.lineage(load_art.id)
    assert [e.step_run.id for e in lineage.produced_by] == [by_node["load"].id]
    assert [(e.step_run.id, e.name) for e in lineage.consumed_by] == [
        (by_node["scale"].id, "values")
    ]

    # the run points at the pipeline version that was traced
    _, version = store.pipelines.get_version(result.record.pipeline_version_id or "")
    assert version.hash == version_hash(basic.linear.build(n=3, factor=2).graph)

    assert events.events[0].kind == "run_started"
    assert events.events[-1].kind == "run_finished"
    assert events.events[-1].message == "SUCCEEDED"
    assert sorted(e.unit or "" for e in events.kinds("step_finished")) == [
        "load",
        "scale",
        "summarize",
    ]
    assert result.record.ended_at is not None


def test_run_is_filed_under_the_given_experiment_and_name(store: Store) -> None:
    basic = resource("eng_basic")
    result = run(basic.linear, store, experiment="tuning", name="first-try")
    assert result.name == "first-try"
    assert store.projects.get_experiment(result.record.experiment_id).name == "tuning"
    assert result.record.executor == "local"


def test_calling_a_pipeline_runs_it_and_returns_a_run_handle(store: Store, home: Path) -> None:
    basic = resource("eng_basic")
    handle = basic.linear(n=2, factor=5, offset=1)
    assert isinstance(handle, treadle.Run)
    assert handle.state is RunState.SUCCEEDED
    assert handle.params == {"n": "2", "factor": "5", "offset": "1"}
    assert handle.outputs["summarize"] == 16
    assert set(handle.steps) == {"load", "scale", "summarize"}
    # the handle reads the store the environment names (the `home` fixture)
    assert store.runs.get_run(handle.id).state is RunState.SUCCEEDED


# -- caching ---------------------------------------------------------------------------


def test_identical_second_run_is_answered_from_the_cache(store: Store) -> None:
    basic = resource("eng_basic")
    first = run(basic.linear, store, {"n": 4})
    events = Events()
    second = run(basic.linear, store, {"n": 4}, on_event=events)

    assert second.state is RunState.SUCCEEDED
    assert second.id != first.id
    first_steps = first.steps
    for node, s in second.steps.items():
        assert s.state is StepState.CACHED, node
        assert s.cached_from == first_steps[node].id
        assert s.cache_key == first_steps[node].cache_key
    assert len(events.kinds("step_cached")) == 3
    assert events.kinds("step_started") == []
    assert second.outputs["summarize"] == first.outputs["summarize"] == 20
    # cached step runs point at the very artifacts the first run produced
    first_ids = {sr.node: a.id for sr, _, a in store.artifacts.run_artifacts(first.id)}
    second_ids = {sr.node: a.id for sr, _, a in store.artifacts.run_artifacts(second.id)}
    assert first_ids == second_ids


def test_changed_parameter_reruns_only_the_affected_steps(store: Store) -> None:
    basic = resource("eng_basic")
    first = run(basic.linear, store, {"n": 3, "factor": 2, "offset": 0})

    new_offset = run(basic.linear, store, {"n": 3, "factor": 2, "offset": 100})
    states = {n: s.state for n, s in new_offset.steps.items()}
    assert states == {
        "load": StepState.CACHED,
        "scale": StepState.CACHED,
        "summarize": StepState.SUCCEEDED,
    }
    assert new_offset.outputs["summarize"] == 112

    new_factor = run(basic.linear, store, {"n": 3, "factor": 3, "offset": 0})
    states = {n: s.state for n, s in new_factor.steps.items()}
    assert states == {
        "load": StepState.CACHED,
        "scale": StepState.SUCCEEDED,
        "summarize": StepState.SUCCEEDED,
    }
    assert new_factor.steps["load"].cached_from == first.steps["load"].id
    assert new_factor.outputs["summarize"] == 18


def test_use_cache_false_runs_every_step_again(store: Store) -> None:
    basic = resource("eng_basic")
    run(basic.linear, store, {"n": 3})
    again = run(basic.linear, store, {"n": 3}, use_cache=False)
    for node, s in again.steps.items():
        assert s.state is StepState.SUCCEEDED, node
        assert s.cached_from is None
    assert again.outputs["summarize"] == 12


def test_step_with_cache_off_always_runs(store: Store) -> None:
    @treadle.step(cache=False)
    def stamp(tag: str) -> float:
        return time.time()

    @treadle.pipeline
    def stamping(tag: str = "t") -> None:
        stamp(tag)

    first = run(stamping, store)
    second = run(stamping, store)
    assert second.steps["stamp"].state is StepState.SUCCEEDED
    assert second.outputs["stamp"] != first.outputs["stamp"]


# -- parallelism ----------------------------------------------------------------------


@pytest.fixture
def parallel() -> Iterator[ModuleType]:
    module = resource("eng_parallel")
    module.BARRIER.reset()
    yield module
    module.BARRIER.reset()


def test_independent_steps_run_at_the_same_time(store: Store, parallel: ModuleType) -> None:
    # Each step waits at a two-party barrier: both can only succeed if they overlap.
    result = run(parallel.parallel_meet, store)
    assert result.state is RunState.SUCCEEDED, result.error
    assert {n: s.state for n, s in result.steps.items()} == {
        "meet": StepState.SUCCEEDED,
        "meet_2": StepState.SUCCEEDED,
    }
    assert (result.outputs["meet"], result.outputs["meet_2"]) == ("a", "b")


def test_max_workers_one_runs_steps_one_at_a_time(store: Store, parallel: ModuleType) -> None:
    # With room for a single step, the barrier can never be met: the runner must not
    # start more than it was told to.
    parallel.WAIT_SECONDS, saved = 0.5, parallel.WAIT_SECONDS
    try:
        result = run(parallel.parallel_meet, store, max_workers=1)
    finally:
        parallel.WAIT_SECONDS = saved
    assert result.state is RunState.FAILED
    assert {s.state for s in result.steps.values()} == {StepState.FAILED}


def test_stdout_of_parallel_steps_lands_in_each_steps_log(
    store: Store, parallel: ModuleType
) -> None:
    result = run(parallel.parallel_chatter, store, {"lines": 40})
    assert result.state is RunState.SUCCEEDED, result.error
    left = log_text(store, result.steps["chatter"])
    right = log_text(store, result.steps["chatter_2"])
    assert left.splitlines() == [f"left line {i}" for i in range(40)]
    assert right.splitlines() == [f"right line {i}" for i in range(40)]


# -- fan-out ------------------------------------------------------------------------------


def test_fan_out_runs_one_step_per_item_and_joins_the_results(store: Store) -> None:
    basic = resource("eng_basic")
    result = run(basic.fan, store, {"n": 4})
    assert result.state is RunState.SUCCEEDED, result.error
    assert result.outputs["total"] == 1 + 4 + 9 + 16
    steps = result.steps
    assert sorted(steps) == ["load", "square[0]", "square[1]", "square[2]", "square[3]", "total"]
    for i in range(4):
        assert steps[f"square[{i}]"].state is StepState.SUCCEEDED
        assert result.outputs[f"square[{i}]"] == (i + 1) ** 2
        assert log_text(store, steps[f"square[{i}]"]) == f"square of {i + 1}\n"
    # the join read every item's artifact
    assert len(store.artifacts.step_input_ids(steps["total"].id)) == 4


def test_fan_out_over_a_literal_list(store: Store) -> None:
    basic = resource("eng_basic")
    result = run(basic.fan_literal, store)
    assert result.state is RunState.SUCCEEDED, result.error
    assert result.outputs["total"] == 4 + 9 + 16
    assert sorted(n for n in result.steps if n.startswith("square")) == [
        "square[0]",
        "square[1]",
        "square[2]",
    ]


def test_empty_list_fans_out_to_zero_runs(store: Store) -> None:
    basic = resource("eng_basic")
    result = run(basic.fan, store, {"n": 0})
    assert result.state is RunState.SUCCEEDED, result.error
    assert sorted(result.steps) == ["load", "total"]
    assert result.outputs["total"] == 0


def test_longer_list_reruns_only_the_new_items(store: Store) -> None:
    basic = resource("eng_basic")
    run(basic.fan, store, {"n": 3})
    longer = run(basic.fan, store, {"n": 4})
    states = {n: s.state for n, s in longer.steps.items()}
    assert states == {
        "load": StepState.SUCCEEDED,
        "square[0]": StepState.CACHED,
        "square[1]": StepState.CACHED,
        "square[2]": StepState.CACHED,
        "square[3]": StepState.SUCCEEDED,
        "total": StepState.SUCCEEDED,
    }
    assert longer.outputs["total"] == 30


@treadle.step
def two_lists() -> tuple[list[int], list[int]]:
    return [1, 2, 3], [1, 2]


@treadle.step
def times(a: int, b: int) -> int:
    return a * b


@treadle.pipeline
def uneven() -> None:
    a, b = two_lists()
    times.map(a=a, b=b)


def test_fan_out_over_lists_of_different_lengths_fails_the_run(store: Store) -> None:
    with pytest.raises(InvalidInputError) as info:
        run(uneven, store)
    assert "a=3" in info.value.message and "b=2" in info.value.message
    (record,) = store.runs.list_runs(
        store.projects.ensure_project(store.settings.project, store.settings.user).id
    )
    assert record.state is RunState.FAILED
    assert "different lengths" in (record.error or "")
    assert {s.node: s.state for s in all_steps(store, record.id)} == {
        "two_lists": StepState.SUCCEEDED
    }


def test_multi_output_steps_store_each_output(store: Store) -> None:
    basic = resource("eng_basic")
    result = run(basic.multi, store, {"n": 6, "pivot": 2})
    assert result.state is RunState.SUCCEEDED, result.error
    assert result.outputs["split.low"] == [1, 2]
    assert result.outputs["split.high"] == [3, 4, 5, 6]
    assert result.outputs["stats.output_0"] == 4
    assert result.outputs["stats.output_1"] == 4.5
    assert result.outputs["describe"] == "4 values, mean 4.5, 2 below"


# -- retries, timeouts, failures ---------------------------------------------------------


def test_retries_with_backoff_until_success(store: Store, tmp_path: Path) -> None:
    flaky = resource("eng_flaky")
    counter = tmp_path / "count"
    events = Events()
    result = run(
        flaky.retry_twice, store, {"counter": str(counter), "fail_times": 2}, on_event=events
    )

    assert result.state is RunState.SUCCEEDED, result.error
    assert result.outputs["flaky_retry2"] == 3
    assert counter.read_text() == "3"
    attempts = attempts_of(store, result.id, "flaky_retry2")
    assert [(a.attempt, a.state) for a in attempts] == [
        (1, StepState.FAILED),
        (2, StepState.FAILED),
        (3, StepState.SUCCEEDED),
    ]
    assert "RuntimeError: flaky failure 1 of 2" in (attempts[0].error or "")
    assert "RuntimeError: flaky failure 2 of 2" in (attempts[1].error or "")
    # retry_delay 0.2 s, backoff 2: the waits before attempts 2 and 3 are 0.2 and 0.4 s
    first_wait = attempts[1].started_at - (attempts[0].ended_at or 0)
    second_wait = attempts[2].started_at - (attempts[1].ended_at or 0)
    assert first_wait >= 0.18
    assert second_wait >= 0.38
    assert [e.attempt for e in events.kinds("step_retrying")] == [1, 2]
    assert result.steps["flaky_retry2"].attempt == 3


def test_retries_exhausted_leave_the_run_failed(store: Store, tmp_path: Path) -> None:
    flaky = resource("eng_flaky")
    counter = tmp_path / "count"
    result = run(flaky.retry_once, store, {"counter": str(counter), "fail_times": 2})
    assert result.state is RunState.FAILED
    assert counter.read_text() == "2"
    attempts = attempts_of(store, result.id, "flaky_retry1")
    assert [(a.attempt, a.state) for a in attempts] == [
        (1, StepState.FAILED),
        (2, StepState.FAILED),
    ]
    assert "flaky_retry1" in (result.error or "")
    assert "flaky failure 2 of 2" in (result.error or "")


def test_timeout_fails_the_step_and_the_run(store: Store, tmp_path: Path) -> None:
    slow = resource("eng_slow")
    marker = tmp_path / "nap"
    events = Events()
    started = time.monotonic()
    result = run(slow.napping, store, {"seconds": 3.0, "pid_file": str(marker)}, on_event=events)
    elapsed = time.monotonic() - started

    # the run ends at the timeout (1 s), not when the sleeping thread wakes up
    assert elapsed < 2.6, f"the run waited {elapsed:.1f}s for a timed-out step"
    assert result.state is RunState.FAILED
    nap = result.steps["nap"]
    assert nap.state is StepState.FAILED
    assert "TimeoutError" in (nap.error or "")
    assert "TimeoutError" in (result.error or "")
    assert "after_nap" not in result.steps
    assert [e.node for e in events.kinds("step_skipped")] == ["after_nap"]

    # the thread cannot be stopped; when it finishes late, nothing it returns is recorded
    assert _wait_for(Path(f"{marker}.done").exists, 5.0)
    time.sleep(0.3)
    late = store.runs.get_step(nap.id)
    assert late.state is StepState.FAILED
    assert "TimeoutError" in (late.error or "")
    assert store.artifacts.step_outputs(nap.id) == {}
    assert result.refresh().state is RunState.FAILED
    assert [s.id for s in all_steps(store, result.id)] == [nap.id]


def test_raising_step_fails_the_run_and_keeps_traceback_and_logs(store: Store) -> None:
    failing = resource("eng_fail")
    result = run(failing.failing, store)

    assert result.state is RunState.FAILED
    steps = result.steps
    explode = steps["explode"]
    assert explode.state is StepState.FAILED
    assert explode.error is not None
    assert explode.error.startswith("Traceback (most recent call last):")
    assert "ValueError: bad value 7" in explode.error
    assert "eng_fail.py" in explode.error
    log = log_text(store, explode)
    assert "explode: about to fail" in log
    assert "explode: a warning on stderr" in log
    assert "downstream" not in steps  # never started
    assert steps["source"].state is StepState.SUCCEEDED
    assert steps["side"].state is StepState.SUCCEEDED  # an unaffected branch still runs
    assert "explode" in (result.error or "") and "ValueError" in (result.error or "")
    assert store.artifacts.step_outputs(explode.id) == {}


def test_step_returning_the_wrong_number_of_outputs_fails(store: Store) -> None:
    failing = resource("eng_fail")
    result = run(failing.arity, store)
    assert result.state is RunState.FAILED
    error = result.steps["wrong_arity"].error or ""
    assert "2 outputs" in error and "output_0, output_1" in error


def test_cache_is_not_used_when_the_artifact_bytes_are_gone(store: Store) -> None:
    basic = resource("eng_basic")
    first = run(basic.linear, store, {"n": 3})
    load_output = store.artifacts.step_outputs(first.steps["load"].id)["output"]
    store.objects.local_path(load_output.uri).unlink()

    second = run(basic.linear, store, {"n": 3})
    assert second.state is RunState.SUCCEEDED, second.error
    assert second.steps["load"].state is StepState.SUCCEEDED
    assert second.outputs["load"] == [1, 2, 3]
    assert store.objects.exists(load_output.sha256)  # written again by the re-run


# -- resume ------------------------------------------------------------------------------


def test_resume_reruns_only_failed_and_unfinished_steps(store: Store, tmp_path: Path) -> None:
    flaky = resource("eng_flaky")
    counter = tmp_path / "count"
    failed = run(flaky.resumable, store, {"counter": str(counter), "fail_times": 1})
    assert failed.state is RunState.FAILED
    before = {s.id for s in all_steps(store, failed.id)}
    prepare_id = failed.steps["prepare"].id
    assert set(failed.steps) == {"prepare", "shaky"}

    # the cause is gone: the counter has passed fail_times
    events = Events()
    resumed = resume_run(failed.id, store, RunOptions(on_event=events))

    assert resumed.id == failed.id
    assert resumed.state is RunState.SUCCEEDED, resumed.error
    assert resumed.record.attempt == 2
    assert resumed.record.error is None
    assert resumed.outputs["finish"] == 22
    steps = all_steps(store, failed.id)
    new = [s for s in steps if s.id not in before]
    assert sorted(s.node for s in new) == ["finish", "shaky"]
    assert {s.state for s in new} == {StepState.SUCCEEDED}
    assert resumed.steps["prepare"].id == prepare_id
    assert [e.unit for e in events.kinds("step_reused")] == ["prepare"]
    assert (tmp_path / "count.prepare").read_text() == "ran\n"  # prepare ran once in all


def test_resume_of_a_fan_out_reruns_only_the_failed_item(store: Store, tmp_path: Path) -> None:
    flaky = resource("eng_flaky")
    failed = run(flaky.fan_resume, store, {"workdir": str(tmp_path), "bad": 2})
    assert failed.state is RunState.FAILED
    assert {n: s.state for n, s in failed.steps.items()} == {
        "fragile_item[0]": StepState.SUCCEEDED,
        "fragile_item[1]": StepState.FAILED,
        "fragile_item[2]": StepState.SUCCEEDED,
    }
    kept = {n: s.id for n, s in failed.steps.items() if s.state is StepState.SUCCEEDED}

    resumed = resume_run(failed.id, store)
    assert resumed.state is RunState.SUCCEEDED, resumed.error
    assert resumed.outputs["add_up"] == 60
    for node, step_run_id in kept.items():
        assert resumed.steps[node].id == step_run_id
    assert resumed.steps["fragile_item[1]"].state is StepState.SUCCEEDED
    assert len(all_steps(store, failed.id)) == 5  # 3 items + the retried item + the join
    counts = {x: (tmp_path / f"item-{x}").read_text().count("ran") for x in (1, 2, 3)}
    assert counts == {1: 1, 2: 2, 3: 1}


def test_resume_after_exhausted_retries_shows_the_new_attempt(store: Store, tmp_path: Path) -> None:
    flaky = resource("eng_flaky")
    counter = tmp_path / "count"
    failed = run(flaky.retry_once, store, {"counter": str(counter), "fail_times": 2})
    assert failed.state is RunState.FAILED  # attempts 1 and 2 both failed

    resumed = resume_run(failed.id, store)
    assert resumed.state is RunState.SUCCEEDED
    assert resumed.outputs["flaky_retry1"] == 3
    latest = resumed.steps["flaky_retry1"]
    assert latest.state is StepState.SUCCEEDED
    # the resumed attempt counts on from the failed ones instead of starting again at 1
    assert latest.attempt == 3


def test_resume_of_a_run_whose_step_logged_a_param(store: Store, tmp_path: Path) -> None:
    metrics = resource("eng_metrics")
    flag = tmp_path / "open"
    failed = run(metrics.train_then_gate, store, {"epochs": 2, "flag_file": str(flag)})
    assert failed.state is RunState.FAILED
    assert failed.params["optimizer"] == "sgd"  # logged by the train step

    flag.write_text("")
    resumed = resume_run(failed.id, store)
    assert resumed.state is RunState.SUCCEEDED


def test_resume_of_a_succeeded_run_is_a_conflict(store: Store) -> None:
    basic = resource("eng_basic")
    done = run(basic.linear, store)
    with pytest.raises(ConflictError):
        resume_run(done.id, store)


# -- metrics -------------------------------------------------------------------------


def test_metrics_logged_in_steps_and_metrics_outputs_are_stored(store: Store) -> None:
    metrics = resource("eng_metrics")
    result = run(metrics.metrics_flow, store, {"epochs": 4})

    assert result.state is RunState.SUCCEEDED, result.error
    assert result.metrics == {"loss": 0.0625, "accuracy": 0.9375, "f1": 0.5}
    history = result.metric_history("loss")
    assert [(m.step, m.value) for m in history] == [(0, 0.5), (1, 0.25), (2, 0.125), (3, 0.0625)]
    steps = result.steps
    assert {m.step_run_id for m in history} == {steps["train"].id}
    assert [m.step_run_id for m in result.metric_history("accuracy")] == [steps["evaluate"].id]
    assert result.params == {"epochs": "4", "optimizer": "sgd"}
    outputs = store.artifacts.step_outputs(steps["evaluate"].id)
    assert outputs["output"].kind == "metrics"
    assert result.outputs["evaluate"] == {"accuracy": 0.9375, "f1": 0.5}


def test_cached_run_carries_the_metrics_and_params_its_steps_logged(store: Store) -> None:
    metrics = resource("eng_metrics")
    first = run(metrics.metrics_flow, store, {"epochs": 3})
    cached = run(metrics.metrics_flow, store, {"epochs": 3})
    assert {s.state for s in cached.steps.values()} == {StepState.CACHED}
    assert cached.metrics == first.metrics == {"loss": 0.125, "accuracy": 0.875, "f1": 0.5}
    assert [(m.step, m.value) for m in cached.metric_history("loss")] == [
        (0, 0.5),
        (1, 0.25),
        (2, 0.125),
    ]
    assert cached.params == first.params == {"epochs": "3", "optimizer": "sgd"}
    # the first run's rows are untouched by the copy
    assert len(first.metric_history("loss")) == 3


# -- the process executor ------------------------------------------------------------

_SAME_RECORDS: dict[str, tuple[str, dict[str, Any]]] = {
    "linear": ("eng_basic", {"n": 5}),
    "fan": ("eng_basic", {"n": 3}),
    "multi": ("eng_basic", {}),
    "failing": ("eng_fail", {}),
    "metrics_flow": ("eng_metrics", {}),
}


def _summary(store: Store, result: Run) -> dict[str, Any]:
    steps = result.steps
    return {
        "state": result.state,
        "steps": {n: (s.state, s.attempt) for n, s in steps.items()},
        "outputs": dict(result.outputs),
        "metrics": result.metrics,
        "params": result.params,
        "errors": {n: (s.error or "").splitlines()[-1:] for n, s in steps.items()},
        "inputs": {n: len(store.artifacts.step_input_ids(s.id)) for n, s in steps.items()},
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", list(_SAME_RECORDS))
def test_process_executor_makes_the_same_records(store: Store, name: str) -> None:
    module, params = _SAME_RECORDS[name]
    pipeline = getattr(resource(module), name)
    local = run(pipeline, store, params, use_cache=False)
    process = run(pipeline, store, params, use_cache=False, executor="process")
    assert process.record.executor == "process"
    assert _summary(store, process) == _summary(store, local)


@pytest.mark.slow
def test_process_executor_retries_and_resumes(store: Store, tmp_path: Path) -> None:
    flaky = resource("eng_flaky")
    retried = run(
        flaky.retry_twice,
        store,
        {"counter": str(tmp_path / "a"), "fail_times": 2},
        executor="process",
    )
    assert retried.state is RunState.SUCCEEDED, retried.error
    assert len(attempts_of(store, retried.id, "flaky_retry2")) == 3

    counter = tmp_path / "b"
    failed = run(
        flaky.resumable, store, {"counter": str(counter), "fail_times": 1}, executor="process"
    )
    assert failed.state is RunState.FAILED
    resumed = resume_run(failed.id, store, RunOptions(executor="process"))
    assert resumed.state is RunState.SUCCEEDED, resumed.error
    assert resumed.outputs["finish"] == 22
    assert (tmp_path / "b.prepare").read_text() == "ran\n"


@pytest.mark.slow
def test_process_executor_captures_step_logs(store: Store) -> None:
    failing = resource("eng_fail")
    result = run(failing.failing, store, executor="process")
    log = log_text(store, result.steps["explode"])
    assert "explode: about to fail" in log
    assert "explode: a warning on stderr" in log


@pytest.mark.slow
def test_process_executor_survives_a_step_process_dying(store: Store) -> None:
    crash = resource("eng_crash")
    result = run(crash.crashing, store, {"code": 3}, executor="process")
    assert result.state is RunState.FAILED
    assert "die" in (result.error or "") and "code 3" in (result.error or "")
    assert result.steps["survivor"].state is StepState.SUCCEEDED
    assert result.outputs["survivor"] == 2


@pytest.mark.slow
def test_step_whose_process_dies_is_recorded_failed(store: Store) -> None:
    crash = resource("eng_crash")
    result = run(crash.crashing, store, {"code": 3}, executor="process")
    die = result.steps["die"]
    assert die.state is StepState.FAILED
    assert die.ended_at is not None
    assert "code 3" in (die.error or "")


@pytest.mark.slow
def test_process_executor_timeout_kills_the_step(store: Store, tmp_path: Path) -> None:
    slow = resource("eng_slow")
    pid_file = tmp_path / "pid"
    started = time.monotonic()
    result = run(
        slow.napping, store, {"seconds": 60.0, "pid_file": str(pid_file)}, executor="process"
    )
    elapsed = time.monotonic() - started

    assert elapsed < 15, f"the run took {elapsed:.1f}s: the sleeping step was not killed"
    assert result.state is RunState.FAILED
    nap = result.steps["nap"]
    assert nap.state is StepState.FAILED
    assert "TimeoutError" in (nap.error or "")
    pid = int(pid_file.read_text())
    assert pid != os.getpid()
    assert _wait_for(lambda: _gone(pid), 5.0), f"step process {pid} is still running"
