"""The model registry and deployment contract: every test runs on SQLite and PostgreSQL.

Each test gets an empty database (`any_store`), so counts, numbers and orderings are exact.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from treadle.errors import ConflictError, InvalidInputError, NotFoundError
from treadle.store import Store
from treadle.store.records import (
    AliasEventRecord,
    AliasRecord,
    ModelVersionRecord,
    ProjectRecord,
    RegisteredModelRecord,
    RunRecord,
    StepRunRecord,
    new_id,
)
from treadle.types import RunState, StepState

T = TypeVar("T")
SHA = "ab" * 32


@dataclasses.dataclass
class World:
    store: Store
    project: ProjectRecord
    model: RegisteredModelRecord


@pytest.fixture
def world(any_store: Store) -> Iterator[World]:
    project = any_store.projects.ensure_project("proj", "alice")
    model = any_store.models.ensure_model(project.id, "iris", "alice")
    yield World(any_store, project, model)


def add_version(
    w: World, model: RegisteredModelRecord | None = None, **overrides: Any
) -> ModelVersionRecord:
    values: dict[str, Any] = {
        "flavor": "sklearn",
        "manifest_sha": SHA,
        "signature": {},
        "metrics": {},
        "run_id": None,
        "step_run_id": None,
        "trusted": False,
        "user": "alice",
    }
    values.update(overrides)
    return w.store.models.add_version((model or w.model).id, **values)


def make_run_and_step(w: World) -> tuple[RunRecord, StepRunRecord]:
    experiment = w.store.projects.ensure_experiment(w.project.id, "default", "alice")
    now = time.time()
    run = RunRecord(
        id=new_id(),
        project_id=w.project.id,
        experiment_id=experiment.id,
        pipeline_version_id=None,
        name="train",
        state=RunState.RUNNING,
        created_by="alice",
        executor="local",
        attempt=1,
        created_at=now,
    )
    w.store.runs.create_run(run)
    step = StepRunRecord(
        id=new_id(),
        run_id=run.id,
        project_id=w.project.id,
        node="fit",
        step_name="fit",
        attempt=1,
        state=StepState.RUNNING,
        started_at=now,
    )
    w.store.runs.start_step(step)
    return run, step


def race(n: int, call: Callable[[int], T]) -> tuple[list[T], list[BaseException]]:
    """Run `call(i)` on n threads released together; each thread uses its own connection."""
    results: list[T] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)
    lock = threading.Lock()

    def target(i: int) -> None:
        try:
            barrier.wait()
            result = call(i)
            with lock:
                results.append(result)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    return results, errors


# -- registered models -------------------------------------------------------------------


def test_ensure_model_is_idempotent_scoped_and_keeps_the_first_creator(
    any_store: Store,
) -> None:
    models = any_store.models
    a = any_store.projects.ensure_project("a", "u")
    b = any_store.projects.ensure_project("b", "u")

    first = models.ensure_model(a.id, "iris", "alice")
    again = models.ensure_model(a.id, "iris", "bob")
    other_project = models.ensure_model(b.id, "iris", "carol")
    zeta = models.ensure_model(a.id, "zeta", "bob")
    alpha = models.ensure_model(a.id, "alpha", "bob")

    assert again == first
    assert (first.project_id, first.name, first.created_by) == (a.id, "iris", "alice")
    assert first.description == ""
    assert len(first.id) == 32
    assert abs(first.created_at - time.time()) < 60
    assert other_project.id != first.id
    assert other_project.project_id == b.id
    assert models.get_model(a.id, "iris") == first
    assert models.get_model(b.id, "iris") == other_project
    assert models.list_models(a.id) == [alpha, first, zeta]
    assert models.list_models(b.id) == [other_project]


def test_concurrent_ensure_model_agrees_on_one_row(world: World) -> None:
    results, errors = race(
        6, lambda i: world.store.models.ensure_model(world.project.id, "raced", f"u{i}")
    )

    assert errors == []
    assert len(results) == 6
    assert len({r.id for r in results}) == 1
    assert [m.name for m in world.store.models.list_models(world.project.id)] == [
        "iris",
        "raced",
    ]


def test_missing_model_is_not_found_with_a_hint(world: World) -> None:
    with pytest.raises(NotFoundError, match="'nope'") as caught:
        world.store.models.get_model(world.project.id, "nope")
    assert "treadle models list" in caught.value.hint

    other = world.store.projects.ensure_project("other", "u")
    with pytest.raises(NotFoundError):
        world.store.models.get_model(other.id, "iris")
    assert world.store.models.list_models(other.id) == []


def test_over_long_model_name_is_invalid_input_on_every_backend(world: World) -> None:
    with pytest.raises(InvalidInputError):
        world.store.models.ensure_model(world.project.id, "m" * 201, "u")
    with pytest.raises(InvalidInputError):
        world.store.models.ensure_model(world.project.id, "", "u")
    assert [m.name for m in world.store.models.list_models(world.project.id)] == ["iris"]


# -- model versions ----------------------------------------------------------------------


def test_add_version_round_trips_every_field(world: World) -> None:
    run, step = make_run_and_step(world)
    signature = {
        "inputs": [{"name": "sepal length", "dtype": "float64", "shape": [-1, 4]}],
        "outputs": [{"name": "label", "dtype": "int64"}],
        "params": {"threshold": 0.5, "strict": True, "note": None},
    }
    before = time.time()
    version = add_version(
        world,
        flavor="pytorch",
        manifest_sha="0123456789abcdef" * 4,
        signature=signature,
        metrics={"accuracy": 0.97, "loss": 1, "f1": -2.5e-9},
        run_id=run.id,
        step_run_id=step.id,
        trusted=True,
        user="bob",
        description="first cut, née «β»",
    )

    assert version == ModelVersionRecord(
        id=version.id,
        model_id=world.model.id,
        version=1,
        flavor="pytorch",
        manifest_sha="0123456789abcdef" * 4,
        signature=signature,
        metrics={"accuracy": 0.97, "loss": 1.0, "f1": -2.5e-9},
        run_id=run.id,
        step_run_id=step.id,
        trusted=True,
        created_at=version.created_at,
        created_by="bob",
        description="first cut, née «β»",
    )
    assert len(version.id) == 32
    assert before <= version.created_at <= time.time()
    assert isinstance(version.metrics["loss"], float)
    assert version.trusted is True

    models = world.store.models
    assert models.get_version(world.model.id, 1) == version
    assert models.get_version_by_id(version.id) == version
    assert models.list_versions(world.model.id) == [version]

    plain = add_version(world)
    assert plain.version == 2
    assert (plain.run_id, plain.step_run_id) == (None, None)
    assert plain.trusted is False
    assert models.get_version_by_id(plain.id).trusted is False
    assert (plain.description, plain.signature, plain.metrics) == ("", {}, {})
    assert models.get_version(world.model.id, 2) == plain


def test_versions_are_numbered_per_model_and_listed_ascending(world: World) -> None:
    other = world.store.models.ensure_model(world.project.id, "other", "alice")
    numbers = [
        add_version(world).version,
        add_version(world, other).version,
        add_version(world).version,
        add_version(world).version,
        add_version(world, other).version,
    ]

    assert numbers == [1, 1, 2, 3, 2]
    assert [v.version for v in world.store.models.list_versions(world.model.id)] == [1, 2, 3]
    assert [v.version for v in world.store.models.list_versions(other.id)] == [1, 2]
    assert world.store.models.list_versions(new_id()) == []


def test_concurrent_add_version_gives_distinct_consecutive_numbers(world: World) -> None:
    add_version(world, description="before the race")

    results, errors = race(6, lambda i: add_version(world, description=f"racer {i}"))

    assert errors == []
    assert sorted(v.version for v in results) == [2, 3, 4, 5, 6, 7]
    assert len({v.id for v in results}) == 6
    listed = world.store.models.list_versions(world.model.id)
    assert [v.version for v in listed] == [1, 2, 3, 4, 5, 6, 7]
    assert {v.id: v for v in listed[1:]} == {v.id: v for v in results}


def test_add_version_to_an_unknown_model_or_run_is_not_found(world: World) -> None:
    with pytest.raises(NotFoundError) as caught:
        world.store.models.add_version(
            new_id(),
            flavor="sklearn",
            manifest_sha=SHA,
            signature={},
            metrics={},
            run_id=None,
            step_run_id=None,
            trusted=False,
            user="u",
        )
    assert caught.value.hint
    with pytest.raises(NotFoundError, match="run"):
        add_version(world, run_id=new_id())
    assert world.store.models.list_versions(world.model.id) == []


def test_add_version_refuses_bad_input_and_writes_nothing(world: World) -> None:
    with pytest.raises(InvalidInputError):
        add_version(world, signature={"inputs": object()})
    with pytest.raises(InvalidInputError):
        add_version(world, metrics={"accuracy": "high"})
    with pytest.raises(InvalidInputError):
        add_version(world, flavor="f" * 65)
    with pytest.raises(InvalidInputError):
        add_version(world, manifest_sha="a" * 65)
    assert world.store.models.list_versions(world.model.id) == []
    assert add_version(world).version == 1


def test_missing_versions_are_not_found_with_a_hint(world: World) -> None:
    add_version(world)
    models = world.store.models

    with pytest.raises(NotFoundError, match="'iris' has no version 7") as caught:
        models.get_version(world.model.id, 7)
    assert "iris" in caught.value.hint
    with pytest.raises(NotFoundError) as caught:
        models.get_version(new_id(), 1)
    assert caught.value.hint
    with pytest.raises(NotFoundError) as caught:
        models.get_version_by_id(new_id())
    assert caught.value.hint


def test_set_trusted_flips_the_flag_and_nothing_else(world: World) -> None:
    version = add_version(world, metrics={"acc": 0.5})
    models = world.store.models

    trusted = models.set_trusted(version.id, True)
    assert trusted == dataclasses.replace(version, trusted=True)
    assert models.get_version_by_id(version.id) == trusted

    untrusted = models.set_trusted(version.id, False)
    assert untrusted == version
    assert models.get_version(world.model.id, 1) == version

    with pytest.raises(NotFoundError):
        models.set_trusted(new_id(), True)


# -- aliases -----------------------------------------------------------------------------


def test_set_alias_creates_moves_and_records_each_change(world: World) -> None:
    v1, v2 = add_version(world), add_version(world)
    models = world.store.models

    before = time.time()
    created = models.set_alias(world.model.id, "prod", v1.id, user="alice", reason="launch")
    assert created == AliasRecord(
        model_id=world.model.id,
        alias="prod",
        version_id=v1.id,
        version=1,
        updated_at=created.updated_at,
        updated_by="alice",
    )
    assert before <= created.updated_at <= time.time()
    assert models.get_alias(world.model.id, "prod") == created

    moved = models.set_alias(world.model.id, "prod", v2.id, user="bob", reason="better f1")
    assert (moved.version_id, moved.version, moved.updated_by) == (v2.id, 2, "bob")
    assert moved.updated_at >= created.updated_at
    assert models.get_alias(world.model.id, "prod") == moved

    staging = models.set_alias(world.model.id, "staging", v1.id, user="carol", reason="")
    assert models.list_aliases(world.model.id) == [moved, staging]

    history = models.alias_history(world.model.id, "prod")
    assert [(e.from_version, e.to_version, e.by, e.reason) for e in history] == [
        (None, 1, "alice", "launch"),
        (1, 2, "bob", "better f1"),
    ]
    assert all(isinstance(e, AliasEventRecord) for e in history)
    assert {e.model_id for e in history} == {world.model.id}
    assert {e.alias for e in history} == {"prod"}
    assert history[0].at == created.updated_at
    assert history[1].at == moved.updated_at
    assert history[0].id < history[1].id

    everything = models.alias_history(world.model.id)
    assert [(e.alias, e.from_version, e.to_version) for e in everything] == [
        ("prod", None, 1),
        ("prod", 1, 2),
        ("staging", None, 1),
    ]
    assert everything[:2] == history


def test_setting_an_alias_to_its_current_version_writes_nothing(world: World) -> None:
    v1 = add_version(world)
    models = world.store.models
    first = models.set_alias(world.model.id, "prod", v1.id, user="alice", reason="launch")

    again = models.set_alias(world.model.id, "prod", v1.id, user="bob", reason="again")

    assert again == first
    assert models.get_alias(world.model.id, "prod") == first
    assert len(models.alias_history(world.model.id)) == 1


def test_delete_alias_records_the_removal(world: World) -> None:
    v1, v2 = add_version(world), add_version(world)
    models = world.store.models
    models.set_alias(world.model.id, "prod", v2.id, user="alice", reason="launch")
    kept = models.set_alias(world.model.id, "staging", v1.id, user="alice", reason="")

    models.delete_alias(world.model.id, "prod", user="bob", reason="incident 42")

    with pytest.raises(NotFoundError, match="'iris' has no alias 'prod'") as caught:
        models.get_alias(world.model.id, "prod")
    assert "iris" in caught.value.hint
    assert models.list_aliases(world.model.id) == [kept]
    last = models.alias_history(world.model.id, "prod")[-1]
    assert (last.from_version, last.to_version, last.by, last.reason) == (
        2,
        None,
        "bob",
        "incident 42",
    )

    with pytest.raises(NotFoundError) as caught:
        models.delete_alias(world.model.id, "prod", user="bob", reason="twice")
    assert caught.value.hint
    assert len(models.alias_history(world.model.id, "prod")) == 2

    models.set_alias(world.model.id, "prod", v1.id, user="carol", reason="back")
    assert [
        (e.from_version, e.to_version) for e in models.alias_history(world.model.id, "prod")
    ] == [
        (None, 2),
        (2, None),
        (None, 1),
    ]


def test_alias_names_are_validated(world: World) -> None:
    version = add_version(world)
    models = world.store.models
    bad = ["", "3", "42", "1prod", "Prod", "pröd", "prod!", "pr od", "-x", "_x", "a" * 65, "prod\n"]
    for alias in bad:
        with pytest.raises(InvalidInputError) as caught:
            models.set_alias(world.model.id, alias, version.id, user="u", reason="")
        assert caught.value.hint, alias
    assert models.list_aliases(world.model.id) == []
    assert models.alias_history(world.model.id) == []

    good = ["a", "prod", "canary-2", "a_b", "v2", "z" + "9" * 63]
    for alias in good:
        models.set_alias(world.model.id, alias, version.id, user="u", reason="")
    assert [a.alias for a in models.list_aliases(world.model.id)] == sorted(good)


def test_alias_must_point_at_a_version_of_its_own_model(world: World) -> None:
    other = world.store.models.ensure_model(world.project.id, "other", "alice")
    foreign = add_version(world, other)
    add_version(world)
    models = world.store.models

    with pytest.raises(InvalidInputError, match="another model"):
        models.set_alias(world.model.id, "prod", foreign.id, user="u", reason="")
    with pytest.raises(NotFoundError):
        models.set_alias(world.model.id, "prod", new_id(), user="u", reason="")
    with pytest.raises(NotFoundError):
        models.set_alias(new_id(), "prod", foreign.id, user="u", reason="")
    assert models.list_aliases(world.model.id) == []
    assert models.alias_history(world.model.id) == []


def test_aliases_and_history_are_per_model(world: World) -> None:
    other = world.store.models.ensure_model(world.project.id, "other", "alice")
    mine, theirs = add_version(world), add_version(world, other)
    models = world.store.models
    models.set_alias(world.model.id, "prod", mine.id, user="u", reason="mine")
    models.set_alias(other.id, "prod", theirs.id, user="u", reason="theirs")

    assert models.get_alias(world.model.id, "prod").version_id == mine.id
    assert models.get_alias(other.id, "prod").version_id == theirs.id
    assert [e.reason for e in models.alias_history(world.model.id)] == ["mine"]
    assert [e.reason for e in models.alias_history(other.id, "prod")] == ["theirs"]
    assert models.alias_history(world.model.id, "staging") == []


def test_concurrent_alias_moves_each_record_the_version_they_left(world: World) -> None:
    versions = [add_version(world) for _ in range(6)]

    _, errors = race(
        6,
        lambda i: world.store.models.set_alias(
            world.model.id, "prod", versions[i].id, user=f"u{i}", reason=""
        ),
    )

    assert errors == []
    history = world.store.models.alias_history(world.model.id, "prod")
    assert len(history) == 6
    assert history[0].from_version is None
    # Serialised moves form one chain: each starts where the previous one ended.
    assert [e.from_version for e in history[1:]] == [e.to_version for e in history[:-1]]
    assert sorted(e.to_version or 0 for e in history) == [1, 2, 3, 4, 5, 6]
    assert world.store.models.get_alias(world.model.id, "prod").version == history[-1].to_version


# -- deployments -------------------------------------------------------------------------


def test_create_and_get_deployment_round_trip(world: World) -> None:
    spec = {"replicas": 2, "resources": {"cpu": "500m"}, "env": ["A=1"], "canary": None}
    before = time.time()
    created = world.store.deployments.create_deployment(
        world.project.id, "iris-api", world.model.id, spec, "alice"
    )

    assert len(created.id) == 32
    assert (created.project_id, created.name, created.model_id) == (
        world.project.id,
        "iris-api",
        world.model.id,
    )
    assert created.spec == spec
    assert created.created_by == "alice"
    assert before <= created.created_at <= time.time()
    assert world.store.deployments.get_deployment(world.project.id, "iris-api") == created


def test_deployment_names_are_unique_per_project(world: World) -> None:
    deployments = world.store.deployments
    first = deployments.create_deployment(world.project.id, "api", world.model.id, {"a": 1}, "u")

    with pytest.raises(ConflictError, match="'api'") as caught:
        deployments.create_deployment(world.project.id, "api", world.model.id, {"b": 2}, "v")
    assert "treadle deployments list" in caught.value.hint
    assert deployments.get_deployment(world.project.id, "api") == first

    elsewhere = world.store.projects.ensure_project("elsewhere", "u")
    model = world.store.models.ensure_model(elsewhere.id, "iris", "u")
    second = deployments.create_deployment(elsewhere.id, "api", model.id, {}, "u")
    assert second.id != first.id
    assert deployments.list_deployments(elsewhere.id) == [second]


def test_concurrent_create_deployment_lets_exactly_one_win(world: World) -> None:
    results, errors = race(
        6,
        lambda i: world.store.deployments.create_deployment(
            world.project.id, "raced", world.model.id, {"racer": i}, f"u{i}"
        ),
    )

    assert len(results) == 1
    assert len(errors) == 5
    assert all(isinstance(e, ConflictError) for e in errors), errors
    assert world.store.deployments.list_deployments(world.project.id) == results


def test_deployment_needs_a_model_of_its_own_project(world: World) -> None:
    elsewhere = world.store.projects.ensure_project("elsewhere", "u")
    deployments = world.store.deployments
    with pytest.raises(NotFoundError):
        deployments.create_deployment(elsewhere.id, "api", world.model.id, {}, "u")
    with pytest.raises(NotFoundError):
        deployments.create_deployment(world.project.id, "api", new_id(), {}, "u")
    with pytest.raises(InvalidInputError):
        deployments.create_deployment(world.project.id, "d" * 201, world.model.id, {}, "u")
    assert deployments.list_deployments(world.project.id) == []
    assert deployments.list_deployments(elsewhere.id) == []


def test_missing_deployment_is_not_found_with_a_hint(world: World) -> None:
    with pytest.raises(NotFoundError, match="'nope'") as caught:
        world.store.deployments.get_deployment(world.project.id, "nope")
    assert "treadle deployments list" in caught.value.hint
    with pytest.raises(NotFoundError) as caught:
        world.store.deployments.update_spec(new_id(), {})
    assert "treadle deployments list" in caught.value.hint


def test_list_deployments_is_scoped_and_sorted(world: World) -> None:
    deployments = world.store.deployments
    zeta = deployments.create_deployment(world.project.id, "zeta", world.model.id, {}, "u")
    alpha = deployments.create_deployment(world.project.id, "alpha", world.model.id, {}, "u")
    other = world.store.projects.ensure_project("other", "u")

    assert deployments.list_deployments(world.project.id) == [alpha, zeta]
    assert deployments.list_deployments(other.id) == []


def test_update_spec_replaces_the_spec_only(world: World) -> None:
    deployments = world.store.deployments
    created = deployments.create_deployment(
        world.project.id, "api", world.model.id, {"replicas": 1, "old": True}, "alice"
    )

    updated = deployments.update_spec(created.id, {"replicas": 3})

    assert updated == dataclasses.replace(created, spec={"replicas": 3})
    assert deployments.get_deployment(world.project.id, "api") == updated


def test_revisions_are_numbered_per_deployment(world: World) -> None:
    deployments = world.store.deployments
    api = deployments.create_deployment(world.project.id, "api", world.model.id, {}, "u")
    batch = deployments.create_deployment(world.project.id, "batch", world.model.id, {}, "u")
    v1, v2 = add_version(world), add_version(world)
    assert deployments.current_revision(api.id) is None
    assert deployments.list_revisions(api.id) == []

    before = time.time()
    r1 = deployments.add_revision(
        api.id, [{"version_id": v1.id, "weight": 100}], reason="launch", user="alice"
    )
    b1 = deployments.add_revision(batch.id, [], reason="empty", user="bob")
    targets = [{"version_id": v1.id, "weight": 90}, {"version_id": v2.id, "weight": 10}]
    r2 = deployments.add_revision(api.id, targets, reason="canary", user="bob")
    r3 = deployments.add_revision(
        api.id, [{"version_id": v2.id, "weight": 100}], reason="promote", user="carol"
    )

    assert [r.number for r in (r1, r2, r3)] == [1, 2, 3]
    assert b1.number == 1
    assert r2.targets == targets
    assert (r2.deployment_id, r2.reason, r2.created_by) == (api.id, "canary", "bob")
    assert len(r2.id) == 32
    assert before <= r1.created_at <= r2.created_at <= time.time()
    assert b1.targets == []
    assert deployments.list_revisions(api.id) == [r1, r2, r3]
    assert deployments.current_revision(api.id) == r3
    assert deployments.current_revision(batch.id) == b1

    with pytest.raises(NotFoundError) as caught:
        deployments.add_revision(new_id(), [], reason="", user="u")
    assert "treadle deployments list" in caught.value.hint


def test_concurrent_add_revision_gives_distinct_consecutive_numbers(world: World) -> None:
    deployments = world.store.deployments
    api = deployments.create_deployment(world.project.id, "api", world.model.id, {}, "u")

    results, errors = race(
        6, lambda i: deployments.add_revision(api.id, [{"i": i}], reason=f"r{i}", user="u")
    )

    assert errors == []
    assert sorted(r.number for r in results) == [1, 2, 3, 4, 5, 6]
    listed = deployments.list_revisions(api.id)
    assert [r.number for r in listed] == [1, 2, 3, 4, 5, 6]
    assert sorted(listed, key=lambda r: r.id) == sorted(results, key=lambda r: r.id)
    assert deployments.current_revision(api.id) == listed[-1]
