"""The registry against a real SQLite store: what a version records (inside a script run
and inside a pipeline step), references, aliases and their history, promotion gates."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

import treadle
from treadle import log_metric
from treadle.engine import RunOptions, run_pipeline
from treadle.engine.loader import load_file
from treadle.errors import ConflictError, InvalidInputError, NotFoundError, TreadleError
from treadle.models.format import read_manifest
from treadle.models.signature import Signature
from treadle.registry import (
    GateFailedError,
    load_model,
    parse_ref,
    promote,
    register_model,
    resolve,
    set_alias,
)
from treadle.store import Store
from treadle.store.records import ModelVersionRecord
from treadle.types import RunState, StepState

# the registry on SQLite and on PostgreSQL, in every run
pytestmark = pytest.mark.every_backend
RESOURCES = Path(__file__).resolve().parents[2] / "resources"
FEATURES = ["f0", "f1", "f2", "f3"]

_X, _Y = make_classification(n_samples=200, n_features=4, n_redundant=0, random_state=11)
TRAIN = pd.DataFrame(_X[:150], columns=FEATURES)
TRAIN_Y = _Y[:150]
TEST = pd.DataFrame(_X[150:], columns=FEATURES)


def fitted(c: float = 1.0) -> LogisticRegression:
    return LogisticRegression(C=c, max_iter=500).fit(TRAIN, TRAIN_Y)


def project_id(store: Store) -> str:
    return store.projects.ensure_project(store.settings.project, store.settings.user).id


def model_id(store: Store, name: str) -> str:
    return store.models.get_model(project_id(store), name).id


def register(store: Store, name: str, **metrics: float) -> ModelVersionRecord:
    """A quick version with the given metrics (the model itself does not matter here)."""
    return register_model(fitted(), name, metrics=metrics, store=store)


def holder(store: Store, name: str, alias: str) -> int:
    return store.models.get_alias(model_id(store, name), alias).version


# -- what a version records -------------------------------------------------------------


def test_register_inside_start_run_records_the_run_and_its_metrics(store: Store) -> None:
    model = fitted()
    with treadle.start_run(experiment="registry") as run:
        log_metric("accuracy", 0.5)
        log_metric("accuracy", 0.81)
        log_metric("loss", 0.3)
        # no store given: the version goes where the run records
        implicit = register_model(model, "churn", input_example=TRAIN.head(5))
        explicit = register_model(model, "churn", metrics={"auc": 0.9, "f1": 1}, store=store)

    assert implicit.run_id == explicit.run_id == run.id
    assert implicit.step_run_id is None
    assert implicit.metrics == {"accuracy": 0.81, "loss": 0.3}
    assert explicit.metrics == {"auc": 0.9, "f1": 1.0}
    manifest = read_manifest(implicit.manifest_sha, store.objects)
    assert manifest.run_id == run.id
    assert manifest.data_hashes == []  # a script reads no step inputs
    assert manifest.metrics == implicit.metrics
    assert store.runs.get_run(run.id).state is RunState.SUCCEEDED

    outside = register_model(model, "churn", store=store)
    assert (outside.run_id, outside.metrics) == (None, {})


def test_register_refuses_a_metric_that_is_not_a_number(store: Store) -> None:
    with pytest.raises(InvalidInputError, match="'notes'"):
        register_model(fitted(), "m", metrics={"notes": "good"}, store=store)  # type: ignore[dict-item]
    with pytest.raises(NotFoundError):
        store.models.get_model(project_id(store), "m")


def test_register_inside_a_pipeline_step_records_step_and_input_hashes(store: Store) -> None:
    path = RESOURCES / "reg_pipeline.py"
    module = load_file(path)
    run = run_pipeline(
        module.train_flow, {"model_name": "piped", "rows": 120}, store, RunOptions(), str(path)
    )
    assert run.state is RunState.SUCCEEDED, run.error
    steps = {s.node: s for s in store.runs.list_steps(run.id)}
    assert {s.state for s in steps.values()} == {StepState.SUCCEEDED}
    trainer, maker = steps["train_and_register"], steps["make_data"]

    version = store.models.get_version(model_id(store, "piped"), 1)
    assert run.outputs["train_and_register"] == 1
    assert version.run_id == run.id
    assert version.step_run_id == trainer.id
    assert version.metrics == {"accuracy": run.metrics["accuracy"], "rows": 120.0}
    assert 0.5 < version.metrics["accuracy"] <= 1.0

    # the hashes are those of the artifacts the step read: the data step's output
    (data_artifact,) = store.artifacts.step_outputs(maker.id).values()
    inputs = [store.artifacts.get_artifact(i) for i in store.artifacts.step_input_ids(trainer.id)]
    manifest = read_manifest(version.manifest_sha, store.objects)
    assert manifest.data_hashes == [data_artifact.sha256] == [a.sha256 for a in inputs]
    stored = store.objects.get_bytes(data_artifact.sha256)
    assert hashlib.sha256(stored).hexdigest() == data_artifact.sha256
    assert manifest.step_run_id == trainer.id

    assert Signature.from_dict(version.signature).columns == FEATURES
    assert len(manifest.input_example) == 5  # the example is capped, whatever was given
    assert manifest.profile is not None and manifest.profile["rows"] == 120
    assert manifest.profile["prediction"]["count"] == 120
    assert load_model("piped@1", store=store).predict(TEST.to_numpy()).shape == (len(TEST),)


def test_signature_example_and_profile_are_recorded(store: Store) -> None:
    model = fitted()
    version = register_model(
        model, "described", input_example=TRAIN.head(7), training_data=TRAIN, store=store
    )
    signature = Signature.from_dict(version.signature)
    assert signature.columns == FEATURES
    assert [c.dtype for c in signature.inputs] == ["float64"] * 4
    assert [c.to_dict() for c in signature.outputs] == [
        {"name": "prediction", "dtype": "int64", "nullable": False}
    ]
    manifest = read_manifest(version.manifest_sha, store.objects)
    assert manifest.input_example == TRAIN.head(5).to_dict(orient="records")
    profile = manifest.profile
    assert profile is not None
    assert profile["rows"] == len(TRAIN)
    assert profile["columns"]["f0"]["mean"] == pytest.approx(TRAIN["f0"].mean())
    predicted = model.predict(TRAIN)
    assert profile["prediction"]["mean"] == pytest.approx(predicted.mean())


def test_missing_values_in_the_example_are_kept_as_null(store: Store) -> None:
    example = TRAIN.head(3).copy()
    example.loc[1, "f2"] = math.nan
    # the model cannot predict on NaN: the version is still registered, without outputs
    version = register_model(fitted(), "gappy", input_example=example, store=store)
    signature = Signature.from_dict(version.signature)
    assert [c.nullable for c in signature.inputs] == [False, False, True, False]
    assert signature.outputs == ()
    manifest = read_manifest(version.manifest_sha, store.objects)
    assert manifest.input_example[1]["f2"] is None
    assert manifest.profile is not None and "prediction" not in manifest.profile
    assert manifest.profile["columns"]["f2"]["missing"] == 1


# -- references -------------------------------------------------------------------------


def test_versions_count_up_and_references_resolve(store: Store) -> None:
    versions = [register(store, "m", accuracy=a) for a in (0.7, 0.8, 0.9)]
    assert [v.version for v in versions] == [1, 2, 3]
    pid = project_id(store)
    set_alias("m@2", "champion", store=store)
    assert resolve(store, pid, "m")[1].id == versions[2].id
    assert resolve(store, pid, "m@latest")[1].id == versions[2].id
    assert resolve(store, pid, "m@1")[1].id == versions[0].id
    assert resolve(store, pid, "m@2")[1].id == versions[1].id
    assert resolve(store, pid, "m@champion")[1].id == versions[1].id
    assert resolve(store, pid, parse_ref(" m@champion "))[1].version == 2
    assert str(parse_ref("m@champion")) == "m@champion"
    assert str(parse_ref("m@3")) == "m@3"


@pytest.mark.parametrize(
    ("ref", "words"),
    [
        ("ghost", "no registered model named 'ghost'"),
        ("ghost@1", "no registered model named 'ghost'"),
        ("m@9", "has no version 9"),
        ("m@staging", "has no alias 'staging'"),
    ],
)
def test_unknown_model_version_or_alias_is_not_found(store: Store, ref: str, words: str) -> None:
    register(store, "m")
    with pytest.raises(NotFoundError, match=words):
        resolve(store, project_id(store), ref)
    with pytest.raises(NotFoundError):
        load_model(ref, store=store)


def test_a_reference_without_a_name_is_invalid() -> None:
    for text in ("", "@champion", "  "):
        with pytest.raises(InvalidInputError):
            parse_ref(text)


def test_version_zero_is_not_found(store: Store) -> None:
    register(store, "m")
    register(store, "m")
    with pytest.raises(NotFoundError):
        resolve(store, project_id(store), "m@0")


def test_a_non_ascii_digit_selector_is_a_treadle_error(store: Store) -> None:
    register(store, "m")
    with pytest.raises(TreadleError):
        resolve(store, project_id(store), "m@²")


# -- aliases and gates ------------------------------------------------------------------


def test_set_alias_by_hand_and_through_passing_gates(store: Store) -> None:
    register(store, "m", accuracy=0.95)
    record, results = set_alias("m@1", "staging", store=store)
    assert (record.alias, record.version, results) == ("staging", 1, [])

    record, results = set_alias("m@1", "prod", require_conditions=["accuracy >= 0.9"], store=store)
    assert record.version == 1
    assert [(r.condition, r.passed, r.detail) for r in results] == [
        ("accuracy >= 0.9", True, "0.95 >= 0.9")
    ]
    history = store.models.alias_history(model_id(store, "m"))
    assert [(e.alias, e.reason) for e in history] == [
        ("staging", "set by hand"),
        ("prod", "gates passed: accuracy >= 0.9 (0.95 >= 0.9)"),
    ]


def test_a_failing_gate_refuses_the_move_naming_the_condition(store: Store) -> None:
    register(store, "m", accuracy=0.85)
    with pytest.raises(GateFailedError, match=r"gate `accuracy >= 0.9` failed \(0.85 >= 0.9\)"):
        set_alias("m@1", "champion", require_conditions=["accuracy >= 0.9"], store=store)
    with pytest.raises(NotFoundError):
        holder(store, "m", "champion")
    assert store.models.alias_history(model_id(store, "m")) == []


def test_promote_challenger_to_champion_through_gates(store: Store) -> None:
    gates = ["accuracy >= 0.9", "auc >= champion.auc - 0.01"]
    register(store, "m", accuracy=0.92, auc=0.90)
    register(store, "m", accuracy=0.85, auc=0.99)
    register(store, "m", accuracy=0.95, auc=0.885)
    register(store, "m", accuracy=0.93, auc=0.895)
    register(store, "m", accuracy=0.5, auc=0.5)

    # the first champion has nothing to beat: the condition about it passes
    set_alias("m@1", "challenger", store=store)
    _, results = promote(
        "m", source="challenger", target="champion", require_conditions=gates, store=store
    )
    assert [r.passed for r in results] == [True, True]
    assert results[1].detail == "no current champion to compare with"
    assert holder(store, "m", "champion") == 1

    set_alias("m@2", "challenger", store=store)
    with pytest.raises(GateFailedError, match=r"`accuracy >= 0.9` failed \(0.85 >= 0.9\)") as e:
        promote("m", source="challenger", target="champion", require_conditions=gates, store=store)
    assert isinstance(e.value, ConflictError) and e.value.http_status == 409

    set_alias("m@3", "challenger", store=store)
    with pytest.raises(
        GateFailedError, match=r"`auc >= champion.auc - 0.01` failed \(0.885 >= 0.89\)"
    ):
        promote("m", source="challenger", target="champion", require_conditions=gates, store=store)

    set_alias("m@5", "challenger", store=store)
    with pytest.raises(GateFailedError, match=r"`accuracy >= 0.9` failed.*, and 1 more"):
        promote("m", source="challenger", target="champion", require_conditions=gates, store=store)
    assert holder(store, "m", "champion") == 1

    set_alias("m@4", "challenger", store=store)
    record, results = promote(
        "m", source="challenger", target="champion", require_conditions=gates, store=store
    )
    assert record.version == 4
    assert results[1].detail == "0.895 >= 0.89"
    assert holder(store, "m", "champion") == 4

    # a version number works as the source too
    promote("m", source="1", target="champion", store=store)
    assert holder(store, "m", "champion") == 1


def test_gates_may_name_the_target_alias_as_the_incumbent(store: Store) -> None:
    register(store, "m", accuracy=0.8)
    register(store, "m", accuracy=0.75)
    set_alias("m@1", "production", store=store)
    with pytest.raises(GateFailedError, match=r"0.75 >= 0.8"):
        set_alias(
            "m@2",
            "production",
            require_conditions=["accuracy >= production.accuracy"],
            store=store,
        )
    _, results = set_alias(
        "m@2",
        "production",
        require_conditions=["accuracy >= production.accuracy - 0.1"],
        store=store,
    )
    assert results[0].passed and holder(store, "m", "production") == 2


@pytest.mark.parametrize(
    "condition",
    [
        "len(accuracy) >= 1",
        "__import__('os').system('true') == 0",
        "accuracy.real >= 0.9",
        "other.auc >= 0.9",
        "staging.auc >= 0.9",
        "champion.auc.real >= 0.9",
        "'a' == 'a'",
        "accuracy >= '0.9'",
        "0.8 <= accuracy <= 0.99",
        "accuracy",
        "accuracy >= 0.9 and auc >= 0.8",
        "accuracy[0] >= 1",
        "accuracy ** 2 >= 0.8",
        "accuracy >=",
        "accuracy >= 1j",
        "accuracy >= nosuch",
    ],
)
def test_gate_parser_refuses_what_is_not_metric_arithmetic(store: Store, condition: str) -> None:
    register(store, "m", accuracy=0.95, auc=0.9)
    register(store, "m", accuracy=0.96, auc=0.91)
    # once with no champion to compare with, once with one
    for ref in ("m@1", "m@2"):
        with pytest.raises(InvalidInputError):
            set_alias(ref, "champion", require_conditions=[condition], store=store)
        if ref == "m@1":
            set_alias("m@1", "champion", store=store)
    assert holder(store, "m", "champion") == 1


@pytest.mark.parametrize(
    "condition", ["champion.auc - 0.01 <= other.auc", "champion.auc <= no_such_metric"]
)
def test_a_bad_condition_is_refused_even_without_a_champion(store: Store, condition: str) -> None:
    register(store, "m", auc=0.9)
    with pytest.raises(InvalidInputError):
        set_alias("m@1", "champion", require_conditions=[condition], store=store)


def test_a_gate_dividing_by_zero_is_a_treadle_error(store: Store) -> None:
    register(store, "m", accuracy=0.9, loss=0.0)
    with pytest.raises(TreadleError):
        set_alias("m@1", "champion", require_conditions=["accuracy / loss >= 1"], store=store)


def test_an_invalid_alias_name_is_refused(store: Store) -> None:
    register(store, "m")
    for alias in ("Prod", "3", "", "a b", "x" * 65):
        with pytest.raises(InvalidInputError):
            set_alias("m@1", alias, store=store)
    assert store.models.list_aliases(model_id(store, "m")) == []


def test_alias_history_records_every_move_with_its_reason(store: Store) -> None:
    for _ in range(3):
        register(store, "m", accuracy=0.9)
    set_alias("m@1", "champion", reason="first release", store=store)
    set_alias("m@2", "challenger", store=store)
    promote("m", source="challenger", target="champion", store=store)
    set_alias("m@2", "champion", reason="no move", store=store)  # already there: no event
    set_alias("m@3", "champion", require_conditions=["accuracy >= 0.5"], store=store)
    mid = model_id(store, "m")
    store.models.delete_alias(mid, "challenger", user="tester", reason="retired")

    moves = [
        (e.alias, e.from_version, e.to_version, e.reason) for e in store.models.alias_history(mid)
    ]
    assert moves == [
        ("champion", None, 1, "first release"),
        ("challenger", None, 2, "set by hand"),
        ("champion", 1, 2, "promoted from challenger"),
        ("champion", 2, 3, "gates passed: accuracy >= 0.5 (0.9 >= 0.5)"),
        ("challenger", 2, None, "retired"),
    ]
    champion = store.models.alias_history(mid, "champion")
    assert [e.to_version for e in champion] == [1, 2, 3]
    assert all(e.by == store.settings.user for e in champion)
    assert [e.at for e in champion] == sorted(e.at for e in champion)


def test_load_model_by_alias_predicts_like_the_registered_model(store: Store) -> None:
    strong, weak = fitted(1.0), fitted(0.001)
    register_model(strong, "m", input_example=TRAIN.head(3), store=store)
    register_model(weak, "m", input_example=TRAIN.head(3), store=store)
    set_alias("m@1", "champion", store=store)
    np.testing.assert_array_equal(
        load_model("m@champion", store=store).predict(TEST.to_numpy()), strong.predict(TEST)
    )
    np.testing.assert_array_equal(
        load_model("m", store=store).predict(TEST.to_numpy()), weak.predict(TEST)
    )
