"""Deployments against a real SQLite store: specs, revisions recorded as aliases move,
canary and shadow targets, rollback and follow, the traffic split check and the router."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from treadle.errors import ConflictError, InvalidInputError, NotFoundError
from treadle.registry import parse_ref, register_model, set_alias
from treadle.serving.deployments import deploy, follow, make_spec, rollback, sync, targets_of
from treadle.serving.traffic import TargetSpec, check_split, load_router
from treadle.store import Store
from treadle.store.records import DeploymentRecord, ModelVersionRecord

FEATURES = ["a", "b", "c"]
_X, _Y = make_classification(n_samples=120, n_features=3, n_redundant=0, random_state=5)
TRAIN = pd.DataFrame(_X, columns=FEATURES)

DRAWS = 20_000
TOLERANCE = 0.02  # ~6 standard deviations of a share estimated from DRAWS draws


def project_id(store: Store) -> str:
    return store.projects.ensure_project(store.settings.project, store.settings.user).id


@pytest.fixture
def versions(store: Store) -> list[ModelVersionRecord]:
    """Three versions of model `m`; champion on 1, challenger on 2."""
    out = [
        register_model(
            LogisticRegression(C=c, max_iter=500).fit(TRAIN, _Y),
            "m",
            input_example=TRAIN.head(3),
            store=store,
        )
        for c in (1.0, 0.1, 0.01)
    ]
    set_alias("m@1", "champion", store=store)
    set_alias("m@2", "challenger", store=store)
    return out


def target(version: ModelVersionRecord, role: str, weight: float) -> TargetSpec:
    return TargetSpec(version.id, version.version, role, weight)


def current(store: Store, deployment: DeploymentRecord) -> list[TargetSpec]:
    return targets_of(store.deployments.current_revision(deployment.id))


def reload(store: Store, name: str) -> DeploymentRecord:
    return store.deployments.get_deployment(project_id(store), name)


# -- specs ------------------------------------------------------------------------------


def test_make_spec_defaults_and_primaries() -> None:
    assert make_spec(parse_ref("m@champion")) == {
        "model": "m",
        "primary": "champion",
        "policy": "single",
        "candidate": None,
        "canary_weight": 0.0,
        "pinned": False,
        "port": None,
    }
    assert make_spec(parse_ref("m@champion"), port=8001)["port"] == 8001
    with pytest.raises(InvalidInputError):
        make_spec(parse_ref("m@champion"), port=70000)
    assert make_spec(parse_ref("m@2"))["primary"] == 2
    assert make_spec(parse_ref("m"))["primary"] == "latest"
    canary = make_spec(parse_ref("m@champion"), policy="canary", candidate="challenger")
    assert (canary["candidate"], canary["canary_weight"]) == ("challenger", 0.1)
    shadow = make_spec(parse_ref("m@champion"), policy="shadow", candidate="3", canary_weight=0.5)
    assert shadow["canary_weight"] == 0.0  # a shadow never answers


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"policy": "blue-green", "candidate": "challenger"}, "unknown policy 'blue-green'"),
        ({"policy": "canary"}, "needs a candidate"),
        ({"policy": "shadow", "candidate": ""}, "needs a candidate"),
        ({"policy": "canary", "candidate": "c", "canary_weight": 0.0}, "between 0% and 100%"),
        ({"policy": "canary", "candidate": "c", "canary_weight": 1.0}, "between 0% and 100%"),
        ({"policy": "canary", "candidate": "c", "canary_weight": -0.1}, "between 0% and 100%"),
        ({"policy": "canary", "candidate": "c", "canary_weight": 1.5}, "got 150%"),
        ({"policy": "canary", "candidate": "c", "canary_weight": math.nan}, "between"),
    ],
)
def test_make_spec_refuses_bad_specs(kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidInputError, match=words):
        make_spec(parse_ref("m@champion"), **kwargs)


# -- revisions --------------------------------------------------------------------------


def test_deploy_creates_revision_one(store: Store, versions: list[ModelVersionRecord]) -> None:
    spec = make_spec(parse_ref("m@champion"))
    deployment, revision = deploy(store, project_id(store), "svc", spec)
    assert deployment.spec == spec
    assert deployment.model_id == versions[0].model_id
    assert revision.number == 1
    assert revision.targets == [
        {"version_id": versions[0].id, "version": 1, "role": "primary", "weight": 1.0}
    ]
    assert revision.reason == "created: single m@champion"
    assert [r.number for r in store.deployments.list_revisions(deployment.id)] == [1]


def test_a_spec_naming_nothing_is_refused_and_records_nothing(
    store: Store, versions: list[ModelVersionRecord]
) -> None:
    pid = project_id(store)
    with pytest.raises(NotFoundError, match="no alias 'staging'"):
        deploy(store, pid, "svc", make_spec(parse_ref("m@staging")))
    with pytest.raises(NotFoundError, match="no version 9"):
        deploy(store, pid, "svc", make_spec(parse_ref("m@1"), policy="canary", candidate="9"))
    with pytest.raises(NotFoundError):
        deploy(store, pid, "svc", make_spec(parse_ref("ghost@champion")))
    assert store.deployments.list_deployments(pid) == []


def test_a_deployment_name_cannot_change_model(
    store: Store, versions: list[ModelVersionRecord]
) -> None:
    pid = project_id(store)
    deploy(store, pid, "svc", make_spec(parse_ref("m@champion")))
    register_model(LogisticRegression().fit(TRAIN, _Y), "other", store=store)
    with pytest.raises(ConflictError, match="serves another model"):
        deploy(store, pid, "svc", make_spec(parse_ref("other")))


def test_moving_the_followed_alias_then_sync_records_a_new_revision_once(
    store: Store, versions: list[ModelVersionRecord]
) -> None:
    pid = project_id(store)
    deployment, first = deploy(store, pid, "svc", make_spec(parse_ref("m@champion")))
    assert sync(store, pid, deployment).number == 1  # nothing moved yet

    set_alias("m@2", "champion", store=store)
    second = sync(store, pid, deployment)
    assert second.number == 2
    assert targets_of(second) == [target(versions[1], "primary", 1.0)]
    assert "m@champion now resolves to v2 primary" in second.reason

    again = sync(store, pid, deployment)
    assert again.id == second.id
    assert [r.number for r in store.deployments.list_revisions(deployment.id)] == [1, 2]
    assert targets_of(store.deployments.list_revisions(deployment.id)[0]) == targets_of(first)


def test_latest_follows_new_registrations(store: Store, versions: list[ModelVersionRecord]) -> None:
    pid = project_id(store)
    deployment, revision = deploy(store, pid, "svc", make_spec(parse_ref("m")))
    assert targets_of(revision) == [target(versions[2], "primary", 1.0)]
    newest = register_model(LogisticRegression().fit(TRAIN, _Y), "m", store=store)
    assert targets_of(sync(store, pid, deployment)) == [target(newest, "primary", 1.0)]


def test_canary_and_shadow_targets(store: Store, versions: list[ModelVersionRecord]) -> None:
    pid = project_id(store)
    v1, v2 = versions[0], versions[1]
    canary_spec = make_spec(
        parse_ref("m@champion"), policy="canary", candidate="challenger", canary_weight=0.2
    )
    _, revision = deploy(store, pid, "svc", canary_spec)
    assert targets_of(revision) == [target(v1, "primary", 0.8), target(v2, "canary", 0.2)]
    check_split(targets_of(revision))

    shadow_spec = make_spec(parse_ref("m@champion"), policy="shadow", candidate="challenger")
    _, changed = deploy(store, pid, "svc", shadow_spec)
    assert changed.number == 2
    assert changed.reason == "policy now shadow with challenger"
    assert targets_of(changed) == [target(v1, "primary", 1.0), target(v2, "shadow", 0.0)]
    assert reload(store, "svc").spec == shadow_spec


@pytest.mark.parametrize("policy", ["canary", "shadow"])
def test_a_candidate_equal_to_the_primary_collapses_to_single(
    store: Store, versions: list[ModelVersionRecord], policy: str
) -> None:
    pid = project_id(store)
    set_alias("m@1", "challenger", store=store)
    spec = make_spec(parse_ref("m@champion"), policy=policy, candidate="challenger")
    deployment, revision = deploy(store, pid, "svc", spec)
    assert targets_of(revision) == [target(versions[0], "primary", 1.0)]
    # once the candidate moves away, the policy shows again
    set_alias("m@3", "challenger", store=store)
    roles = [(t.version, t.role) for t in targets_of(sync(store, pid, deployment))]
    assert roles == [(1, "primary"), (3, policy)]


# -- rollback and follow ----------------------------------------------------------------


def test_rollback_returns_to_the_previous_versions_and_pins(
    store: Store, versions: list[ModelVersionRecord]
) -> None:
    pid = project_id(store)
    deployment, first = deploy(store, pid, "svc", make_spec(parse_ref("m@champion")))
    set_alias("m@2", "champion", store=store)
    sync(store, pid, deployment)

    back = rollback(store, pid, "svc")
    assert back.number == 3
    assert back.targets == first.targets
    assert back.reason == "rollback to revision 1 (v1 primary)"
    deployment = reload(store, "svc")
    assert deployment.spec["pinned"] is True

    # pinned: alias moves no longer change what is served
    set_alias("m@3", "champion", store=store)
    assert sync(store, pid, deployment).id == back.id
    assert current(store, deployment) == [target(versions[0], "primary", 1.0)]

    caught_up = follow(store, pid, "svc")
    assert caught_up.number == 4
    assert targets_of(caught_up) == [target(versions[2], "primary", 1.0)]
    assert caught_up.reason == "following aliases again"
    assert reload(store, "svc").spec["pinned"] is False
    set_alias("m@1", "champion", store=store)
    assert sync(store, pid, reload(store, "svc")).number == 5


def test_rolling_back_again_goes_further_back(
    store: Store, versions: list[ModelVersionRecord]
) -> None:
    pid = project_id(store)
    deployment, _ = deploy(store, pid, "svc", make_spec(parse_ref("m@champion")))
    for number in (2, 3):
        set_alias(f"m@{number}", "champion", store=store)
        sync(store, pid, reload(store, "svc"))
    assert current(store, deployment) == [target(versions[2], "primary", 1.0)]

    once = rollback(store, pid, "svc")
    assert targets_of(once) == [target(versions[1], "primary", 1.0)]
    twice = rollback(store, pid, "svc")
    assert targets_of(twice) == [target(versions[0], "primary", 1.0)]
    assert twice.reason == "rollback to revision 1 (v1 primary)"
    with pytest.raises(ConflictError):
        rollback(store, pid, "svc")
    assert targets_of(follow(store, pid, "svc")) == [target(versions[2], "primary", 1.0)]


def test_rollback_of_a_canary_restores_the_whole_split(
    store: Store, versions: list[ModelVersionRecord]
) -> None:
    pid = project_id(store)
    spec = make_spec(
        parse_ref("m@champion"), policy="canary", candidate="challenger", canary_weight=0.3
    )
    deployment, first = deploy(store, pid, "svc", spec)
    set_alias("m@3", "challenger", store=store)
    assert [t.version for t in targets_of(sync(store, pid, deployment))] == [1, 3]
    assert rollback(store, pid, "svc").targets == first.targets


def test_a_new_deploy_unpins(store: Store, versions: list[ModelVersionRecord]) -> None:
    pid = project_id(store)
    deployment, _ = deploy(store, pid, "svc", make_spec(parse_ref("m@champion")))
    set_alias("m@2", "champion", store=store)
    sync(store, pid, deployment)
    rollback(store, pid, "svc")
    _, revision = deploy(store, pid, "svc", make_spec(parse_ref("m@champion")))
    assert reload(store, "svc").spec["pinned"] is False
    assert targets_of(revision) == [target(versions[1], "primary", 1.0)]


def test_rollback_without_an_earlier_revision_is_a_conflict(
    store: Store, versions: list[ModelVersionRecord]
) -> None:
    pid = project_id(store)
    deployment, _ = deploy(store, pid, "svc", make_spec(parse_ref("m@champion")))
    with pytest.raises(ConflictError, match="no earlier revision"):
        rollback(store, pid, "svc")
    assert reload(store, "svc").spec["pinned"] is False
    assert len(store.deployments.list_revisions(deployment.id)) == 1
    with pytest.raises(NotFoundError, match="no deployment named 'nope'"):
        rollback(store, pid, "nope")


# -- the traffic split ------------------------------------------------------------------

_V = [f"id{i}" for i in range(4)]


@pytest.mark.parametrize(
    ("targets", "words"),
    [
        ([TargetSpec(_V[1], 1, "primary", 0.6), TargetSpec(_V[2], 2, "canary", 0.3)], "90.0%"),
        ([TargetSpec(_V[1], 1, "primary", 0.5)], "50.0%"),
        (
            [TargetSpec(_V[1], 1, "primary", 1.2), TargetSpec(_V[2], 2, "canary", -0.2)],
            "version 2 has an invalid weight -0.2",
        ),
        (
            [TargetSpec(_V[1], 1, "primary", 1.0), TargetSpec(_V[2], 2, "shadow", 0.1)],
            "version 2 has an invalid weight 0.1",
        ),
        ([TargetSpec(_V[2], 2, "shadow", 0.0)], "at least one version that answers"),
        ([], "at least one version that answers"),
        (
            [TargetSpec(_V[1], 1, "primary", 1.0), TargetSpec(_V[2], 2, "mirror", 0.0)],
            "unknown traffic role 'mirror'",
        ),
        ([TargetSpec(_V[1], 1, "primary", math.inf)], "inf"),
    ],
)
def test_check_split_refuses_bad_splits(targets: list[TargetSpec], words: str) -> None:
    with pytest.raises(InvalidInputError, match=words):
        check_split(targets)


@pytest.mark.parametrize(
    "weights", [[1.0], [0.9, 0.1], [0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3], [0.999_999_5, 0.0]]
)
def test_check_split_accepts_weights_adding_to_one(weights: list[float]) -> None:
    targets = [
        TargetSpec(_V[i], i + 1, "primary" if i == 0 else "canary", w)
        for i, w in enumerate(weights)
    ]
    check_split([*targets, TargetSpec(_V[3], 9, "shadow", 0.0)])


def test_check_split_refuses_a_nan_weight() -> None:
    with pytest.raises(InvalidInputError):
        check_split([TargetSpec(_V[1], 1, "primary", math.nan)])


# -- the router -------------------------------------------------------------------------


def shares(choices: list[int]) -> dict[int, float]:
    counts = Counter(choices)
    return {version: n / len(choices) for version, n in counts.items()}


def test_router_spreads_a_canary_close_to_its_weights(
    store: Store, versions: list[ModelVersionRecord]
) -> None:
    pid = project_id(store)
    spec = make_spec(
        parse_ref("m@champion"), policy="canary", candidate="challenger", canary_weight=0.25
    )
    _, revision = deploy(store, pid, "svc", spec)
    router = load_router(store, "svc", revision.number, targets_of(revision))
    assert router.versions() == [1, 2]
    assert router.primary.spec.version == 1
    assert router.shadows == []

    got = shares([router.choose().spec.version for _ in range(DRAWS)])
    assert set(got) == {1, 2}
    assert got[1] == pytest.approx(0.75, abs=TOLERANCE)
    assert got[2] == pytest.approx(0.25, abs=TOLERANCE)

    # each target answers with its own model through its signature
    rows = TRAIN.head(20).to_numpy().tolist()
    for t in router.targets:
        assert t.model.predict(t.signature.check_rows(rows)).shape == (20,)


def test_router_spreads_a_three_way_split_and_never_answers_with_a_shadow(
    store: Store, versions: list[ModelVersionRecord]
) -> None:
    v1, v2, v3 = versions
    cache: dict[str, Any] = {}
    specs = [target(v1, "primary", 0.5), target(v2, "canary", 0.3), target(v3, "canary", 0.2)]
    router = load_router(store, "svc", None, specs, cache)
    got = shares([router.choose().spec.version for _ in range(DRAWS)])
    for version, weight in ((1, 0.5), (2, 0.3), (3, 0.2)):
        assert got[version] == pytest.approx(weight, abs=TOLERANCE)

    shadowed = load_router(
        store, "svc", None, [target(v2, "primary", 1.0), target(v3, "shadow", 0.0)], cache
    )
    assert {shadowed.choose().spec.version for _ in range(2_000)} == {2}
    assert [t.spec.version for t in shadowed.shadows] == [3]
    # versions already loaded are taken from the cache, not loaded again
    assert shadowed.targets[0].model is router.targets[1].model
    assert set(cache) == {v1.id, v2.id, v3.id}


def test_router_refuses_a_bad_split(store: Store, versions: list[ModelVersionRecord]) -> None:
    with pytest.raises(InvalidInputError, match="adds up to"):
        load_router(store, "svc", None, [target(versions[0], "primary", 0.5)])


def test_routed_model_predicts_like_the_registered_one(
    store: Store, versions: list[ModelVersionRecord]
) -> None:
    model = LogisticRegression(C=1.0, max_iter=500).fit(TRAIN, _Y)
    router = load_router(store, "svc", 1, [target(versions[0], "primary", 1.0)])
    chosen = router.choose()
    rows = TRAIN.tail(30).to_numpy().tolist()
    np.testing.assert_array_equal(
        chosen.model.predict(chosen.signature.check_rows(rows)), model.predict(TRAIN.tail(30))
    )
