"""The metadata store contract: every test runs on SQLite and on PostgreSQL (`any_store`).

Each test gets an empty database, so counts and orderings are exact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import threading
import uuid
from collections.abc import Iterator

import pytest

from treadle.errors import ConflictError, InvalidInputError, NotFoundError
from treadle.store import Store
from treadle.store.records import (
    ArtifactRecord,
    ExperimentRecord,
    LineageEdge,
    MetricRecord,
    ProjectRecord,
    RunRecord,
    StepRunRecord,
    new_id,
)
from treadle.types import RunState, StepState

T0 = 1_700_000_000.125


def hex_id(prefix: str = "") -> str:
    return (prefix + uuid.uuid4().hex)[:32]


@dataclasses.dataclass
class World:
    store: Store
    project: ProjectRecord
    experiment: ExperimentRecord


@pytest.fixture
def world(any_store: Store) -> Iterator[World]:
    project = any_store.projects.ensure_project("proj", "alice")
    experiment = any_store.projects.ensure_experiment(project.id, "default", "alice")
    yield World(any_store, project, experiment)


def make_run(
    w: World,
    *,
    created_at: float = T0,
    run_id: str | None = None,
    experiment_id: str | None = None,
    project_id: str | None = None,
    state: RunState = RunState.PENDING,
    name: str = "run",
    pipeline_version_id: str | None = None,
) -> RunRecord:
    run = RunRecord(
        id=run_id or new_id(),
        project_id=project_id or w.project.id,
        experiment_id=experiment_id or w.experiment.id,
        pipeline_version_id=pipeline_version_id,
        name=name,
        state=state,
        created_by="alice",
        executor="local",
        attempt=1,
        created_at=created_at,
    )
    w.store.runs.create_run(run)
    return run


def step_record(
    run: RunRecord,
    *,
    node: str = "train",
    state: StepState = StepState.RUNNING,
    started_at: float = T0 + 1,
    ended_at: float | None = None,
    cache_key: str | None = None,
    cached_from: str | None = None,
    attempt: int = 1,
    step_run_id: str | None = None,
) -> StepRunRecord:
    return StepRunRecord(
        id=step_run_id or new_id(),
        run_id=run.id,
        project_id=run.project_id,
        node=node,
        step_name=node.split("[")[0],
        attempt=attempt,
        state=state,
        started_at=started_at,
        cache_key=cache_key,
        cached_from=cached_from,
        ended_at=ended_at,
    )


def artifact_record(
    project_id: str,
    *,
    name: str = "model",
    run_id: str | None = None,
    producer: str | None = None,
    artifact_id: str | None = None,
    size: int = 123,
    created_at: float = T0 + 2,
) -> ArtifactRecord:
    sha = hashlib.sha256(name.encode() + uuid.uuid4().bytes).hexdigest()
    return ArtifactRecord(
        id=artifact_id or new_id(),
        project_id=project_id,
        name=name,
        kind="model",
        materializer="skops",
        python_type="sklearn.linear_model._logistic.LogisticRegression",
        sha256=sha,
        uri=f"treadle-object:sha256:{sha}",
        size=size,
        created_at=created_at,
        run_id=run_id,
        producer_step_run_id=producer,
    )


def output_edge(artifact: ArtifactRecord, step: StepRunRecord, name: str) -> LineageEdge:
    return LineageEdge(artifact.id, step.id, "output", name)


def input_edge(artifact: ArtifactRecord, step: StepRunRecord, name: str) -> LineageEdge:
    return LineageEdge(artifact.id, step.id, "input", name)


# -- projects and experiments ---------------------------------------------------------


def test_ensure_project_is_idempotent_and_keeps_the_first_creator(any_store: Store) -> None:
    first = any_store.projects.ensure_project("vision", "alice")
    again = any_store.projects.ensure_project("vision", "bob")
    other = any_store.projects.ensure_project("speech", "bob")

    assert again == first
    assert first.name == "vision"
    assert first.created_by == "alice"
    assert len(first.id) == 32
    assert other.id != first.id
    assert other.created_by == "bob"


def test_experiments_are_unique_per_project_not_globally(any_store: Store) -> None:
    a = any_store.projects.ensure_project("a", "u")
    b = any_store.projects.ensure_project("b", "u")

    exp_a = any_store.projects.ensure_experiment(a.id, "baseline", "alice")
    exp_a_again = any_store.projects.ensure_experiment(a.id, "baseline", "bob")
    exp_b = any_store.projects.ensure_experiment(b.id, "baseline", "carol")

    assert exp_a_again == exp_a
    assert exp_b.id != exp_a.id
    assert exp_a.project_id == a.id
    assert exp_b.project_id == b.id
    assert exp_a.description == ""
    assert any_store.projects.get_experiment(exp_b.id) == exp_b
    assert any_store.projects.find_experiment(a.id, "baseline") == exp_a


def test_missing_experiment_is_not_found(world: World) -> None:
    with pytest.raises(NotFoundError):
        world.store.projects.get_experiment(new_id())
    with pytest.raises(NotFoundError):
        world.store.projects.find_experiment(world.project.id, "nope")


def test_list_experiments_counts_runs_and_sorts_by_name(world: World) -> None:
    projects = world.store.projects
    zeta = projects.ensure_experiment(world.project.id, "zeta", "u")
    alpha = projects.ensure_experiment(world.project.id, "alpha", "u")
    other_project = projects.ensure_project("other", "u")
    foreign = projects.ensure_experiment(other_project.id, "foreign", "u")
    make_run(world, experiment_id=zeta.id, created_at=T0 + 10)
    make_run(world, experiment_id=zeta.id, created_at=T0 + 30)
    make_run(world, experiment_id=zeta.id, created_at=T0 + 20)
    make_run(world, created_at=T0 + 5)
    make_run(world, project_id=other_project.id, experiment_id=foreign.id, created_at=T0 + 99)

    summaries = projects.list_experiments(world.project.id)

    assert [s.experiment.name for s in summaries] == ["alpha", "default", "zeta"]
    by_name = {s.experiment.name: s for s in summaries}
    assert by_name["alpha"].experiment == alpha
    assert (by_name["alpha"].run_count, by_name["alpha"].last_run_at) == (0, None)
    assert (by_name["default"].run_count, by_name["default"].last_run_at) == (1, T0 + 5)
    assert (by_name["zeta"].run_count, by_name["zeta"].last_run_at) == (3, T0 + 30)
    assert [s.experiment.name for s in projects.list_experiments(other_project.id)] == ["foreign"]


# -- pipelines --------------------------------------------------------------------------


def test_ensure_version_same_hash_gives_the_same_version(world: World) -> None:
    spec = {"nodes": [{"name": "load", "params": {"rows": 500}}], "edges": [], "ñ": 1.5}
    pipelines = world.store.pipelines
    p1, v1 = pipelines.ensure_version(world.project.id, "training", "h" * 64, spec, "def f(): ...")
    p2, v2 = pipelines.ensure_version(world.project.id, "training", "h" * 64, {}, "other source")

    assert (p2, v2) == (p1, v1)
    assert p1.name == "training"
    assert p1.project_id == world.project.id
    assert v1.pipeline_id == p1.id
    assert v1.hash == "h" * 64
    assert v1.spec == spec
    assert v1.source == "def f(): ..."


def test_ensure_version_new_hash_adds_a_version_to_the_same_pipeline(world: World) -> None:
    pipelines = world.store.pipelines
    p1, v1 = pipelines.ensure_version(world.project.id, "training", "a" * 64, {"v": 1}, "s1")
    p2, v2 = pipelines.ensure_version(world.project.id, "training", "b" * 64, {"v": 2}, "s2")
    other = world.store.projects.ensure_project("other", "u")
    p3, v3 = pipelines.ensure_version(other.id, "training", "a" * 64, {"v": 1}, "s1")

    assert p2 == p1
    assert v2.id != v1.id
    assert v2.spec == {"v": 2}
    assert p3.id != p1.id
    assert v3.id != v1.id
    assert pipelines.get_version(v1.id) == (p1, v1)
    assert pipelines.get_version(v2.id) == (p1, v2)
    assert pipelines.get_version(v3.id) == (p3, v3)


def test_concurrent_ensure_calls_agree_on_one_row(world: World) -> None:
    results: list[tuple[str, str, str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def ensure() -> None:
        try:
            barrier.wait()
            exp = world.store.projects.ensure_experiment(world.project.id, "raced", "u")
            pipeline, version = world.store.pipelines.ensure_version(
                world.project.id, "raced", "r" * 64, {"n": 1}, ""
            )
            results.append((exp.id, pipeline.id, version.id))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ensure) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert errors == []
    assert len(results) == 6
    assert len(set(results)) == 1
    assert [p.name for p in world.store.pipelines.list_pipelines(world.project.id)] == ["raced"]


def test_get_version_unknown_is_not_found(world: World) -> None:
    with pytest.raises(NotFoundError):
        world.store.pipelines.get_version(new_id())


def test_list_pipelines_is_scoped_and_sorted(world: World) -> None:
    pipelines = world.store.pipelines
    pipelines.ensure_version(world.project.id, "zz", "1" * 64, {}, "")
    pipelines.ensure_version(world.project.id, "aa", "2" * 64, {}, "")
    pipelines.ensure_version(world.project.id, "aa", "3" * 64, {}, "")
    other = world.store.projects.ensure_project("other", "u")
    pipelines.ensure_version(other.id, "mm", "4" * 64, {}, "")

    listed = pipelines.list_pipelines(world.project.id)

    assert [p.name for p in listed] == ["aa", "zz"]
    assert all(p.project_id == world.project.id for p in listed)
    assert [p.name for p in pipelines.list_pipelines(other.id)] == ["mm"]


# -- runs -------------------------------------------------------------------------------


def test_create_run_round_trips_every_field(world: World) -> None:
    _, version = world.store.pipelines.ensure_version(world.project.id, "p", "c" * 64, {}, "")
    run = make_run(world, name="nightly ✓", pipeline_version_id=version.id)

    assert world.store.runs.get_run(run.id) == run
    assert world.store.runs.get_run(run.id, world.project.id) == run


def test_get_run_by_unique_prefix_case_and_whitespace_insensitive(world: World) -> None:
    run = make_run(world)
    assert world.store.runs.get_run(run.id[:4]) == run
    assert world.store.runs.get_run(f"  {run.id[:8].upper()} ") == run


def test_get_run_ambiguous_prefix(world: World) -> None:
    a = make_run(world, run_id=hex_id("abcd0"))
    b = make_run(world, run_id=hex_id("abcd1"))

    with pytest.raises(InvalidInputError, match="ambiguous"):
        world.store.runs.get_run("abcd")
    assert world.store.runs.get_run("abcd0") == a
    assert world.store.runs.get_run("abcd1") == b


def test_get_run_rejects_short_or_non_hex_ids(world: World) -> None:
    make_run(world, run_id=hex_id("abcd"))
    for given in ("abc", "", "  ", "zzzz", "abcd-", "abcd%", "ab_d", "abcd' OR '1'='1"):
        with pytest.raises(InvalidInputError):
            world.store.runs.get_run(given)


def test_get_run_not_found(world: World) -> None:
    run = make_run(world, run_id=hex_id("1111"))
    other = world.store.projects.ensure_project("other", "u")

    with pytest.raises(NotFoundError):
        world.store.runs.get_run(new_id())
    with pytest.raises(NotFoundError):
        world.store.runs.get_run("2222")
    with pytest.raises(NotFoundError):
        world.store.runs.get_run(run.id + "0")
    with pytest.raises(NotFoundError):
        world.store.runs.get_run(run.id, other.id)
    with pytest.raises(NotFoundError):
        world.store.runs.get_run("1111", other.id)


def test_list_runs_newest_first_with_paging(world: World) -> None:
    runs = [make_run(world, created_at=T0 + i, name=f"r{i}") for i in (3, 1, 4, 0, 2)]
    newest_first = sorted(runs, key=lambda r: r.created_at, reverse=True)

    listed = world.store.runs.list_runs(world.project.id)
    assert listed == newest_first

    pages = [world.store.runs.list_runs(world.project.id, limit=2, offset=o) for o in (0, 2, 4, 6)]
    assert [[r.name for r in page] for page in pages] == [["r4", "r3"], ["r2", "r1"], ["r0"], []]


def test_list_runs_ties_on_created_at_are_ordered_by_id(world: World) -> None:
    ids = sorted(new_id() for _ in range(3))
    for run_id in ids:
        make_run(world, run_id=run_id, created_at=T0)
    assert [r.id for r in world.store.runs.list_runs(world.project.id)] == ids[::-1]


def test_list_runs_filters_by_project_experiment_and_state(world: World) -> None:
    second = world.store.projects.ensure_experiment(world.project.id, "second", "u")
    other = world.store.projects.ensure_project("other", "u")
    other_exp = world.store.projects.ensure_experiment(other.id, "default", "u")
    r1 = make_run(world, created_at=T0 + 1)
    r2 = make_run(world, created_at=T0 + 2, experiment_id=second.id)
    r3 = make_run(world, created_at=T0 + 3, experiment_id=second.id)
    foreign = make_run(world, created_at=T0 + 4, project_id=other.id, experiment_id=other_exp.id)
    world.store.runs.set_run_state(r3.id, RunState.FAILED, at=T0 + 5, error="boom")
    list_runs = world.store.runs.list_runs

    assert [r.id for r in list_runs(world.project.id)] == [r3.id, r2.id, r1.id]
    assert [r.id for r in list_runs(world.project.id, experiment_id=second.id)] == [r3.id, r2.id]
    assert [r.id for r in list_runs(world.project.id, state=RunState.PENDING)] == [r2.id, r1.id]
    assert [
        r.id for r in list_runs(world.project.id, experiment_id=second.id, state=RunState.FAILED)
    ] == [r3.id]
    assert list_runs(world.project.id, state=RunState.SUCCEEDED) == []
    assert [r.id for r in list_runs(other.id)] == [foreign.id]


def test_set_run_state_lifecycle(world: World) -> None:
    run = make_run(world)
    runs = world.store.runs

    running = runs.set_run_state(run.id, RunState.RUNNING, at=T0 + 1)
    assert (running.state, running.started_at, running.ended_at) == (RunState.RUNNING, T0 + 1, None)

    failed = runs.set_run_state(run.id, RunState.FAILED, at=T0 + 5, error="step train failed")
    assert failed.state is RunState.FAILED
    assert (failed.started_at, failed.ended_at) == (T0 + 1, T0 + 5)
    assert failed.error == "step train failed"
    assert failed.duration == 4
    assert runs.get_run(run.id) == failed

    resumed = runs.set_run_state(run.id, RunState.RUNNING, at=T0 + 9, restart=True)
    assert resumed.state is RunState.RUNNING
    assert resumed.attempt == 2
    assert resumed.ended_at is None
    assert resumed.error is None
    assert resumed.started_at == T0 + 1
    assert runs.get_run(run.id) == resumed

    done = runs.set_run_state(run.id, RunState.SUCCEEDED, at=T0 + 12)
    assert (done.state, done.ended_at, done.error, done.attempt) == (
        RunState.SUCCEEDED,
        T0 + 12,
        None,
        2,
    )
    assert runs.get_run(run.id) == done


def test_restart_of_a_never_started_run_sets_started_at(world: World) -> None:
    run = make_run(world)
    restarted = world.store.runs.set_run_state(run.id, RunState.RUNNING, at=T0 + 3, restart=True)
    assert (restarted.started_at, restarted.attempt) == (T0 + 3, 2)


def test_set_run_state_of_unknown_run_is_not_found(world: World) -> None:
    with pytest.raises(NotFoundError):
        world.store.runs.set_run_state(new_id(), RunState.RUNNING, at=T0)


# -- step runs -------------------------------------------------------------------------


def test_start_and_finish_step_writes_outputs_and_lineage(world: World) -> None:
    run = make_run(world)
    step = step_record(run, cache_key="k" * 64)
    world.store.runs.start_step(step)
    assert world.store.runs.get_step(step.id) == step

    model = artifact_record(world.project.id, name="model", run_id=run.id, producer=step.id)
    done = world.store.runs.finish_step(
        step.id,
        StepState.SUCCEEDED,
        at=T0 + 4,
        log_uri="treadle-object:sha256:" + "0" * 64,
        artifacts=[model],
        edges=[output_edge(model, step, "return")],
    )

    assert done is True
    finished = world.store.runs.get_step(step.id)
    assert finished == dataclasses.replace(
        step,
        state=StepState.SUCCEEDED,
        ended_at=T0 + 4,
        log_uri="treadle-object:sha256:" + "0" * 64,
    )
    assert finished.duration == 3
    assert world.store.artifacts.get_artifact(model.id) == model
    assert world.store.artifacts.step_outputs(step.id) == {"return": model}


def test_finish_step_after_it_ended_returns_false_and_writes_nothing(world: World) -> None:
    run = make_run(world)
    step = step_record(run)
    world.store.runs.start_step(step)
    assert world.store.runs.finish_step(step.id, StepState.FAILED, at=T0 + 2, error="timeout")

    late = artifact_record(world.project.id, run_id=run.id, producer=step.id)
    again = world.store.runs.finish_step(
        step.id,
        StepState.SUCCEEDED,
        at=T0 + 9,
        log_uri="late-log",
        artifacts=[late],
        edges=[output_edge(late, step, "return")],
    )

    assert again is False
    kept = world.store.runs.get_step(step.id)
    assert (kept.state, kept.ended_at, kept.error, kept.log_uri) == (
        StepState.FAILED,
        T0 + 2,
        "timeout",
        None,
    )
    with pytest.raises(NotFoundError):
        world.store.artifacts.get_artifact(late.id)
    assert world.store.artifacts.step_outputs(step.id) == {}


def test_finish_step_of_unknown_step_returns_false(world: World) -> None:
    assert world.store.runs.finish_step(new_id(), StepState.SUCCEEDED, at=T0) is False


def test_add_step_records_a_finished_step_with_its_edges(world: World) -> None:
    first = make_run(world)
    producer = step_record(first, cache_key="c" * 64)
    world.store.runs.start_step(producer)
    data = artifact_record(world.project.id, name="data", run_id=first.id, producer=producer.id)
    world.store.runs.finish_step(
        producer.id,
        StepState.SUCCEEDED,
        at=T0 + 2,
        artifacts=[data],
        edges=[output_edge(data, producer, "return")],
    )

    second = make_run(world, created_at=T0 + 10)
    hit = step_record(
        second,
        state=StepState.CACHED,
        started_at=T0 + 11,
        ended_at=T0 + 11,
        cache_key="c" * 64,
        cached_from=producer.id,
    )
    world.store.runs.add_step(hit, edges=[output_edge(data, hit, "return")])

    assert world.store.runs.get_step(hit.id) == hit
    assert world.store.runs.list_steps(second.id) == [hit]
    assert world.store.artifacts.step_outputs(hit.id) == {"return": data}


def test_list_steps_orders_by_start_then_attempt(world: World) -> None:
    run = make_run(world)
    other_run = make_run(world)
    late = step_record(
        run, node="eval", started_at=T0 + 9, state=StepState.SKIPPED, ended_at=T0 + 9
    )
    retry = step_record(run, node="train", started_at=T0 + 5, attempt=2)
    first = step_record(run, node="train", started_at=T0 + 5, attempt=1, state=StepState.FAILED)
    load = step_record(run, node="load", started_at=T0 + 1)
    for s in (late, retry, first, load):
        world.store.runs.add_step(s)
    world.store.runs.add_step(step_record(other_run, node="load"))

    assert world.store.runs.list_steps(run.id) == [load, first, retry, late]
    assert world.store.runs.list_steps(new_id()) == []


def test_get_step_unknown_is_not_found(world: World) -> None:
    with pytest.raises(NotFoundError):
        world.store.runs.get_step(new_id())


def test_find_cached_newest_succeeded_in_the_same_project(world: World) -> None:
    key = "f" * 64
    run = make_run(world)
    runs = world.store.runs
    old = step_record(run, state=StepState.SUCCEEDED, cache_key=key, ended_at=T0 + 2)
    new = step_record(run, state=StepState.SUCCEEDED, cache_key=key, ended_at=T0 + 5)
    failed = step_record(run, state=StepState.FAILED, cache_key=key, ended_at=T0 + 8)
    cached = step_record(
        run, state=StepState.CACHED, cache_key=key, ended_at=T0 + 9, cached_from=new.id
    )
    running = step_record(run, state=StepState.RUNNING, cache_key=key, started_at=T0 + 10)
    other_key = step_record(run, state=StepState.SUCCEEDED, cache_key="e" * 64, ended_at=T0 + 20)
    for s in (new, old, failed, cached, running, other_key):
        runs.add_step(s)
    other = world.store.projects.ensure_project("other", "u")
    other_exp = world.store.projects.ensure_experiment(other.id, "default", "u")
    foreign_run = make_run(world, project_id=other.id, experiment_id=other_exp.id)
    runs.add_step(
        step_record(foreign_run, state=StepState.SUCCEEDED, cache_key=key, ended_at=T0 + 30)
    )

    assert runs.find_cached(world.project.id, key) == new
    assert runs.find_cached(world.project.id, "d" * 64) is None
    assert runs.find_cached(other.id, "e" * 64) is None


def test_find_cached_ignores_a_step_that_failed_after_starting(world: World) -> None:
    run = make_run(world)
    step = step_record(run, cache_key="9" * 64)
    world.store.runs.start_step(step)
    assert world.store.runs.find_cached(world.project.id, "9" * 64) is None
    world.store.runs.finish_step(step.id, StepState.FAILED, at=T0 + 3, error="x")
    assert world.store.runs.find_cached(world.project.id, "9" * 64) is None


# -- artifacts and lineage -------------------------------------------------------------


def test_add_and_get_artifact_by_id_and_prefix(world: World) -> None:
    big = artifact_record(world.project.id, artifact_id=hex_id("beef0"), size=5 * 2**30)
    standalone = artifact_record(world.project.id, name="notes", artifact_id=hex_id("beef1"))
    world.store.artifacts.add_artifact(big)
    world.store.artifacts.add_artifact(standalone)
    catalog = world.store.artifacts

    assert catalog.get_artifact(big.id) == big
    assert catalog.get_artifact(big.id).size == 5 * 2**30
    assert catalog.get_artifact("beef0") == big
    assert catalog.get_artifact("BEEF1", world.project.id) == standalone
    with pytest.raises(InvalidInputError, match="ambiguous"):
        catalog.get_artifact("beef")
    with pytest.raises(InvalidInputError):
        catalog.get_artifact("bee")
    with pytest.raises(InvalidInputError):
        catalog.get_artifact("not-hex")
    with pytest.raises(NotFoundError):
        catalog.get_artifact(new_id())
    other = world.store.projects.ensure_project("other", "u")
    with pytest.raises(NotFoundError):
        catalog.get_artifact(big.id, other.id)


def _pipeline_of_two_steps(
    w: World,
) -> tuple[RunRecord, StepRunRecord, StepRunRecord, ArtifactRecord, ArtifactRecord, ArtifactRecord]:
    """load -> (train.x, train.y) -> model, with `train` reading both of load's outputs."""
    run = make_run(w)
    load = step_record(run, node="load", started_at=T0 + 1)
    w.store.runs.start_step(load)
    x = artifact_record(w.project.id, name="x", run_id=run.id, producer=load.id)
    y = artifact_record(w.project.id, name="y", run_id=run.id, producer=load.id)
    w.store.runs.finish_step(
        load.id,
        StepState.SUCCEEDED,
        at=T0 + 2,
        artifacts=[y, x],
        edges=[output_edge(y, load, "y"), output_edge(x, load, "x")],
    )
    train = step_record(run, node="train", started_at=T0 + 3)
    w.store.runs.start_step(train)
    model = artifact_record(w.project.id, name="model", run_id=run.id, producer=train.id)
    w.store.runs.finish_step(
        train.id,
        StepState.SUCCEEDED,
        at=T0 + 4,
        artifacts=[model],
        edges=[
            input_edge(x, train, "features"),
            input_edge(y, train, "labels"),
            output_edge(model, train, "return"),
        ],
    )
    return run, load, train, x, y, model


def test_step_outputs_and_inputs(world: World) -> None:
    _, load, train, x, y, model = _pipeline_of_two_steps(world)
    catalog = world.store.artifacts

    assert catalog.step_outputs(load.id) == {"x": x, "y": y}
    assert list(catalog.step_outputs(load.id)) == ["x", "y"]
    assert catalog.step_outputs(train.id) == {"return": model}
    assert catalog.step_input_ids(train.id) == [x.id, y.id]
    assert catalog.step_input_ids(load.id) == []


def test_step_input_ids_lists_every_artifact_of_a_joined_input(world: World) -> None:
    run = make_run(world)
    join = step_record(run, node="join")
    world.store.runs.start_step(join)
    parts = [artifact_record(world.project.id, name=f"part{i}") for i in range(3)]
    for part in parts:
        world.store.artifacts.add_artifact(part)
    world.store.runs.finish_step(
        join.id,
        StepState.SUCCEEDED,
        at=T0 + 2,
        edges=[input_edge(p, join, "parts") for p in parts],
    )
    assert world.store.artifacts.step_input_ids(join.id) == sorted(p.id for p in parts)


def test_run_artifacts_lists_outputs_in_step_order(world: World) -> None:
    run, load, train, x, y, model = _pipeline_of_two_steps(world)
    finished_load = world.store.runs.get_step(load.id)
    finished_train = world.store.runs.get_step(train.id)

    assert world.store.artifacts.run_artifacts(run.id) == [
        (finished_load, "x", x),
        (finished_load, "y", y),
        (finished_train, "return", model),
    ]
    assert world.store.artifacts.run_artifacts(new_id()) == []


def test_run_artifacts_include_cache_hits(world: World) -> None:
    _, _, train, _, _, model = _pipeline_of_two_steps(world)
    second = make_run(world, created_at=T0 + 100)
    hit = step_record(
        second,
        node="train",
        state=StepState.CACHED,
        started_at=T0 + 101,
        ended_at=T0 + 101,
        cached_from=train.id,
    )
    world.store.runs.add_step(hit, edges=[output_edge(model, hit, "return")])

    assert world.store.artifacts.run_artifacts(second.id) == [(hit, "return", model)]


def test_lineage_produced_and_consumed_by(world: World) -> None:
    _, load, train, x, _, model = _pipeline_of_two_steps(world)
    catalog = world.store.artifacts

    lx = catalog.lineage(x.id[:6])
    assert lx.artifact == x
    assert [(e.step_run.id, e.name) for e in lx.produced_by] == [(load.id, "x")]
    assert [(e.step_run.id, e.name) for e in lx.consumed_by] == [(train.id, "features")]
    assert lx.produced_by[0].step_run == world.store.runs.get_step(load.id)

    lm = catalog.lineage(model.id)
    assert [(e.step_run.id, e.name) for e in lm.produced_by] == [(train.id, "return")]
    assert lm.consumed_by == []

    with pytest.raises(NotFoundError):
        catalog.lineage(new_id())


def test_add_artifact_with_edges_and_duplicate_edges_are_ignored(world: World) -> None:
    run = make_run(world)
    step = step_record(run)
    world.store.runs.start_step(step)
    logged = artifact_record(world.project.id, name="report", run_id=run.id, producer=step.id)
    edge = output_edge(logged, step, "report")
    world.store.artifacts.add_artifact(logged, [edge, edge])
    consumer = step_record(run, node="other", started_at=T0 + 5)
    consumed = input_edge(logged, consumer, "report")
    world.store.runs.add_step(consumer, edges=[consumed, consumed])

    assert world.store.artifacts.get_artifact(logged.id) == logged
    lineage = world.store.artifacts.lineage(logged.id)
    assert [(e.step_run.id, e.name) for e in lineage.produced_by] == [(step.id, "report")]
    assert [(e.step_run.id, e.name) for e in lineage.consumed_by] == [(consumer.id, "report")]


# -- params and metrics ----------------------------------------------------------------


def test_over_long_param_key_is_invalid_input_on_every_backend(world: World) -> None:
    run = make_run(world)
    with pytest.raises(InvalidInputError):
        world.store.tracking.log_params(run.id, {"k" * 300: "v"})
    assert world.store.tracking.get_params(run.id) == {}


def test_log_params_round_trip_and_same_value_again_is_fine(world: World) -> None:
    run = make_run(world)
    tracking = world.store.tracking
    tracking.log_params(run.id, {"lr": "0.1", "model": "naïve bayes ✓"})
    tracking.log_params(run.id, {"lr": "0.1", "epochs": "10"})
    tracking.log_params(run.id, {})

    assert tracking.get_params(run.id) == {"epochs": "10", "lr": "0.1", "model": "naïve bayes ✓"}
    assert list(tracking.get_params(run.id)) == ["epochs", "lr", "model"]
    assert tracking.get_params(make_run(world).id) == {}


def test_log_params_conflict_writes_nothing(world: World) -> None:
    run = make_run(world)
    tracking = world.store.tracking
    tracking.log_params(run.id, {"lr": "0.1"})

    with pytest.raises(ConflictError, match="lr"):
        tracking.log_params(run.id, {"batch": "32", "lr": "0.2", "seed": "7"})

    assert tracking.get_params(run.id) == {"lr": "0.1"}


def test_params_are_per_run(world: World) -> None:
    a, b = make_run(world), make_run(world)
    world.store.tracking.log_params(a.id, {"lr": "0.1"})
    world.store.tracking.log_params(b.id, {"lr": "0.2"})
    assert world.store.tracking.get_params(a.id) == {"lr": "0.1"}
    assert world.store.tracking.get_params(b.id) == {"lr": "0.2"}


def test_metrics_round_trip_including_nan_and_infinities(world: World) -> None:
    run = make_run(world)
    step = step_record(run)
    world.store.runs.start_step(step)
    logged = [
        MetricRecord(run.id, "loss", 0.5, 0, T0 + 1, step_run_id=step.id),
        MetricRecord(run.id, "loss", math.nan, 1, T0 + 2, step_run_id=step.id),
        MetricRecord(run.id, "loss", math.inf, 2, T0 + 3),
        MetricRecord(run.id, "loss", -math.inf, 3, T0 + 4),
        MetricRecord(run.id, "big", 1e300, 2**40, T0 + 5),
    ]
    world.store.tracking.log_metrics(logged)
    world.store.tracking.log_metrics([])

    history = world.store.tracking.metric_history(run.id, "loss")
    assert [m.step for m in history] == [0, 1, 2, 3]
    assert history[0] == logged[0]
    assert math.isnan(history[1].value)
    assert dataclasses.replace(history[1], value=0.0) == dataclasses.replace(logged[1], value=0.0)
    assert history[2:] == logged[2:4]
    assert world.store.tracking.metric_history(run.id, "big") == [logged[4]]


def test_metric_history_ordering_and_key_filter(world: World) -> None:
    run = make_run(world)
    other = make_run(world)
    tracking = world.store.tracking
    tracking.log_metrics(
        [
            MetricRecord(run.id, "loss", 0.3, 2, T0 + 9),
            MetricRecord(run.id, "acc", 0.7, 1, T0 + 1),
            MetricRecord(run.id, "loss", 0.9, 0, T0 + 5),
            MetricRecord(run.id, "loss", 0.5, 1, T0 + 2),
            MetricRecord(run.id, "loss", 0.4, 1, T0 + 3),
            MetricRecord(other.id, "loss", 9.0, 0, T0),
        ]
    )

    everything = tracking.metric_history(run.id)
    assert [(m.key, m.step, m.value) for m in everything] == [
        ("acc", 1, 0.7),
        ("loss", 0, 0.9),
        ("loss", 1, 0.5),
        ("loss", 1, 0.4),
        ("loss", 2, 0.3),
    ]
    assert [m.value for m in tracking.metric_history(run.id, "loss")] == [0.9, 0.5, 0.4, 0.3]
    assert tracking.metric_history(run.id, "nope") == []
    assert [m.value for m in tracking.metric_history(other.id)] == [9.0]


def test_latest_metrics_take_the_highest_step_then_the_last_logged(world: World) -> None:
    run = make_run(world)
    tracking = world.store.tracking
    tracking.log_metrics(
        [
            MetricRecord(run.id, "loss", 0.2, 5, T0 + 1),
            MetricRecord(run.id, "loss", 0.9, 1, T0 + 2),
            MetricRecord(run.id, "acc", 0.5, 3, T0 + 3),
        ]
    )
    tracking.log_metrics([MetricRecord(run.id, "acc", 0.6, 3, T0 + 4)])
    tracking.log_metrics([MetricRecord(run.id, "auc", math.nan, 0, T0 + 5)])

    latest = tracking.latest_metrics(run.id)
    assert set(latest) == {"acc", "auc", "loss"}
    assert latest["loss"] == 0.2
    assert latest["acc"] == 0.6
    assert math.isnan(latest["auc"])
    assert tracking.latest_metrics(make_run(world).id) == {}


def test_copy_step_tracking_gives_a_cache_hit_the_original_params_and_metrics(
    world: World,
) -> None:
    tracking = world.store.tracking
    first = make_run(world)
    original = step_record(first, state=StepState.SUCCEEDED, ended_at=T0 + 2)
    world.store.runs.add_step(original)
    tracking.log_params(first.id, {"lr": "0.1"}, step_run_id=original.id)
    tracking.log_params(first.id, {"run_level": "x"})
    tracking.log_metrics(
        [
            MetricRecord(first.id, "acc", 0.8, 0, T0 + 1, step_run_id=original.id),
            MetricRecord(first.id, "acc", 0.9, 1, T0 + 2, step_run_id=original.id),
            MetricRecord(first.id, "run_level", 1.0, 0, T0 + 2),
        ]
    )
    second = make_run(world, created_at=T0 + 10)
    hit = step_record(second, state=StepState.CACHED, ended_at=T0 + 11, cached_from=original.id)
    world.store.runs.add_step(hit)

    tracking.copy_step_tracking(original.id, second.id, hit.id)

    assert tracking.get_params(second.id) == {"lr": "0.1"}
    assert [
        (m.key, m.value, m.step, m.timestamp, m.step_run_id)
        for m in tracking.metric_history(second.id)
    ] == [("acc", 0.8, 0, T0 + 1, hit.id), ("acc", 0.9, 1, T0 + 2, hit.id)]
    assert tracking.get_params(first.id) == {"lr": "0.1", "run_level": "x"}
    assert len(tracking.metric_history(first.id)) == 3


# -- heartbeats -------------------------------------------------------------------------


def test_a_silent_running_run_is_failed_with_its_running_steps(world: World) -> None:
    """A dead executor (no heartbeat) and a slow one (heartbeats) are told apart."""
    store = world.store
    silent = make_run(world, name="silent")
    store.runs.set_run_state(silent.id, RunState.RUNNING, at=T0)
    store.runs.start_step(step_record(silent, started_at=T0 + 1))
    slow = make_run(world, name="slow")
    store.runs.set_run_state(slow.id, RunState.RUNNING, at=T0)
    store.runs.heartbeat(slow.id, T0 + 100)
    done = make_run(world, name="done")
    store.runs.set_run_state(done.id, RunState.SUCCEEDED, at=T0 + 2)

    failed = store.runs.fail_stale(T0 + 50, T0 + 101)

    assert [r.id for r in failed] == [silent.id]
    now_silent = store.runs.get_run(silent.id)
    assert now_silent.state is RunState.FAILED and now_silent.state.resumable
    assert "resume" in (now_silent.error or "")
    assert [s.state for s in store.runs.list_steps(silent.id)] == [StepState.FAILED]
    assert store.runs.get_run(slow.id).state is RunState.RUNNING
    assert store.runs.get_run(slow.id).heartbeat_at == T0 + 100
    assert store.runs.get_run(done.id).state is RunState.SUCCEEDED
    assert store.runs.fail_stale(T0 + 50, T0 + 102) == []


def test_a_heartbeat_does_not_revive_a_finished_run(world: World) -> None:
    store = world.store
    run = make_run(world)
    store.runs.set_run_state(run.id, RunState.RUNNING, at=T0)
    store.runs.set_run_state(run.id, RunState.FAILED, at=T0 + 1, error="boom")
    store.runs.heartbeat(run.id, T0 + 5)
    assert store.runs.get_run(run.id).heartbeat_at == T0


# -- users -------------------------------------------------------------------------------


def test_a_user_name_raced_by_many_writers_is_made_once_and_the_rest_conflict(
    any_store: Store,
) -> None:
    """Two servers on one database making the first admin at once: one wins, the others
    get a ConflictError (never a driver's integrity error)."""
    barrier = threading.Barrier(6)
    made: list[str] = []
    refused: list[BaseException] = []
    lock = threading.Lock()

    def create() -> None:
        # six connections open at once first, so no writer is delayed by connecting
        with any_store.db.read() as conn:
            conn.execute("SELECT 1")
            barrier.wait()
        barrier.wait()
        try:
            user = any_store.auth.create_user("admin", is_admin=True)
            with lock:
                made.append(user.id)
        except BaseException as exc:
            with lock:
                refused.append(exc)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(made) == 1
    assert len(refused) == 5 and all(isinstance(e, ConflictError) for e in refused), refused
    assert "choose another name" in str(refused[0])
    assert any_store.auth.get_user("admin").id == made[0]
    assert any_store.auth.get_user("admin").is_admin
