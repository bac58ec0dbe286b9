"""Model flavors saved and loaded through the registry (same predictions after the round
trip), what is refused unless trusted, the hash-checked model folder, and profiles."""

from __future__ import annotations

import builtins
import hashlib
import importlib
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.base import BaseEstimator
from sklearn.datasets import load_iris, make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from treadle.errors import CorruptArtifactError, InvalidInputError
from treadle.models import flavors
from treadle.models.flavors import UntrustedModelError
from treadle.models.format import MANIFEST, Manifest, materialize, read_manifest, save_manifest
from treadle.models.profile import BINS, QUANTILES, TOP, profile_frame
from treadle.models.signature import Signature
from treadle.registry import load_model, load_version, register_model
from treadle.registry.api import model_cache
from treadle.store import Store
from treadle.store.records import ModelVersionRecord

RESOURCES = Path(__file__).resolve().parents[2] / "resources"
FEATURES = ["f0", "f1", "f2", "f3"]

_X, _Y = make_classification(n_samples=240, n_features=4, n_redundant=0, random_state=7)
TRAIN_X, TEST_X = _X[:160], _X[160:]
TRAIN_Y = _Y[:160]
TRAIN = pd.DataFrame(TRAIN_X, columns=FEATURES)


@pytest.fixture
def reg_models(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The python-flavor model module, importable by name as the loader will import it."""
    monkeypatch.syspath_prepend(str(RESOURCES))
    return importlib.import_module("reg_models")


def served_predictions(store: Store, version: ModelVersionRecord, X: np.ndarray) -> Any:
    """Predictions the way the server makes them: rows checked against the recorded
    signature, then handed to the model loaded from the store."""
    manifest, model = load_version(store, version)
    signature = Signature.from_dict(version.signature)
    assert manifest.model_signature == signature
    return model.predict(signature.check_rows(X.tolist()))


# -- sklearn ----------------------------------------------------------------------------

SKLEARN_MODELS: dict[str, Callable[[], BaseEstimator]] = {
    "logistic": lambda: LogisticRegression(max_iter=500),
    "scaled-pipeline": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
    "forest": lambda: RandomForestClassifier(n_estimators=8, max_depth=4, random_state=0),
}


@pytest.mark.parametrize("kind", list(SKLEARN_MODELS))
def test_sklearn_round_trip_predicts_the_same(store: Store, kind: str) -> None:
    model = SKLEARN_MODELS[kind]().fit(TRAIN, TRAIN_Y)
    version = register_model(model, f"sk-{kind}", input_example=TRAIN.head(5), store=store)
    assert version.flavor == "sklearn"
    assert version.trusted is False

    expected = model.predict(pd.DataFrame(TEST_X, columns=FEATURES))
    np.testing.assert_array_equal(served_predictions(store, version, TEST_X), expected)
    by_ref = load_model(f"sk-{kind}@{version.version}", store=store)
    # arrays and frames may take different BLAS paths: equal to the last few ulps
    np.testing.assert_allclose(
        by_ref.model.predict_proba(TEST_X),
        model.predict_proba(pd.DataFrame(TEST_X, columns=FEATURES)),
        rtol=1e-12,
    )

    manifest = read_manifest(version.manifest_sha, store.objects)
    assert manifest.flavor_meta["payload"] == "model.skops"
    assert set(manifest.files) == {"model.skops"}
    assert manifest.flavor_meta["refused_types"] == []
    assert f"scikit-learn=={sklearn.__version__}" in manifest.requirements


def test_forest_records_the_tree_type_it_trusts(store: Store) -> None:
    model = SKLEARN_MODELS["forest"]().fit(TRAIN, TRAIN_Y)
    version = register_model(model, "forest", input_example=TRAIN.head(5), store=store)
    manifest = read_manifest(version.manifest_sha, store.objects)
    assert "sklearn.tree._tree.Tree" in manifest.flavor_meta["trusted_types"]
    # the recorded list is what lets an untrusted version load
    np.testing.assert_array_equal(
        served_predictions(store, version, TEST_X),
        model.predict(pd.DataFrame(TEST_X, columns=FEATURES)),
    )


def test_bundled_dataset_model_round_trips(store: Store) -> None:
    iris = load_iris(as_frame=True)
    frame: pd.DataFrame = iris.frame.drop(columns="target")
    model = LogisticRegression(max_iter=1000).fit(frame, iris.target)
    version = register_model(model, "iris", input_example=frame.head(10), store=store)
    assert Signature.from_dict(version.signature).columns == list(frame.columns)
    assert [c["name"] for c in version.signature["outputs"]] == ["prediction"]
    np.testing.assert_array_equal(
        served_predictions(store, version, frame.to_numpy()), model.predict(frame)
    )


@pytest.mark.parametrize("func", [builtins.eval, os.system], ids=["eval", "os.system"])
def test_sklearn_model_holding_a_dangerous_function_is_refused_unless_trusted(
    store: Store, func: Callable[..., Any]
) -> None:
    model = FunctionTransformer(func=func)
    version = register_model(model, "danger", store=store)
    refused = read_manifest(version.manifest_sha, store.objects).flavor_meta["refused_types"]
    assert len(refused) == 1 and refused[0].endswith(func.__name__)

    with pytest.raises(UntrustedModelError, match=func.__name__) as info:
        load_version(store, version)
    assert info.value.http_status == 403

    trusted = store.models.set_trusted(version.id, True)
    assert load_version(store, trusted)[1].model.func is func
    again = register_model(model, "danger", trusted=True, store=store)
    assert load_version(store, again)[1].model.func is func


def test_a_refused_type_recorded_at_save_says_how_to_trust_the_version(store: Store) -> None:
    version = register_model(FunctionTransformer(func=eval), "danger", store=store)
    with pytest.raises(UntrustedModelError, match="does not load by default") as info:
        load_version(store, version)
    assert "treadle models trust" in info.value.hint


def test_sklearn_file_with_types_not_recorded_at_save_is_refused(
    store: Store, tmp_path: Path
) -> None:
    # a manifest that hides the dangerous type it carries still cannot load it
    version = register_model(FunctionTransformer(func=eval), "hidden", store=store)
    manifest, folder = materialize(version.manifest_sha, store.objects, tmp_path / "cache")
    meta = {**manifest.flavor_meta, "refused_types": [], "trusted_types": []}
    with pytest.raises(UntrustedModelError, match=r"not recorded when it was saved.*eval"):
        flavors.load("sklearn", folder, meta, trusted=False)


# -- onnx -------------------------------------------------------------------------------


def test_onnx_round_trip_predicts_like_the_sklearn_model(store: Store, tmp_path: Path) -> None:
    from skl2onnx import to_onnx

    model = LogisticRegression(max_iter=500).fit(TRAIN_X, TRAIN_Y)
    onx = to_onnx(model, TRAIN_X[:1].astype(np.float32))
    expected = model.predict(TEST_X.astype(np.float32))

    version = register_model(onx, "onnx-lr", input_example=TRAIN_X[:5], store=store)
    assert version.flavor == "onnx"
    assert Signature.from_dict(version.signature).columns == ["x0", "x1", "x2", "x3"]
    np.testing.assert_array_equal(served_predictions(store, version, TEST_X), expected)
    manifest = read_manifest(version.manifest_sha, store.objects)
    assert manifest.requirements == ["onnxruntime"]

    # the same graph given as bytes, or as a path to a .onnx file
    path = tmp_path / "lr.onnx"
    path.write_bytes(onx.SerializeToString())
    from_bytes = register_model(
        onx.SerializeToString(), "onnx-lr", flavor="onnx", input_example=TRAIN_X[:5], store=store
    )
    from_path = register_model(str(path), "onnx-lr", input_example=TRAIN_X[:5], store=store)
    assert from_path.flavor == "onnx"
    for again in (from_bytes, from_path):
        assert read_manifest(again.manifest_sha, store.objects).files == manifest.files
        np.testing.assert_array_equal(served_predictions(store, again, TEST_X), expected)


# -- python and pickle ------------------------------------------------------------------


def test_python_flavor_round_trip(store: Store, reg_models: ModuleType) -> None:
    model = reg_models.ThresholdModel([0.5, -1.0, 2.0, 0.0], threshold=0.1)
    version = register_model(model, "rule", input_example=TRAIN.head(4), store=store)
    assert version.flavor == "python"
    manifest = read_manifest(version.manifest_sha, store.objects)
    assert manifest.flavor_meta["class"] == "reg_models:ThresholdModel"
    assert set(manifest.files) == {"data/params.json"}
    assert manifest.requirements == ["numpy"]

    loaded = load_model("rule", store=store)
    assert isinstance(loaded, reg_models.ThresholdModel)
    assert loaded.weights == model.weights
    np.testing.assert_array_equal(served_predictions(store, version, TEST_X), model.predict(TEST_X))
    assert set(np.unique(model.predict(TEST_X))) == {0, 1}  # the rule is not constant


def test_pickle_flavor_loads_only_when_trusted(store: Store) -> None:
    model = LogisticRegression(max_iter=500).fit(TRAIN_X, TRAIN_Y)
    version = register_model(model, "pickled", flavor="pickle", store=store)
    assert version.flavor == "pickle"
    with pytest.raises(UntrustedModelError, match="pickle"):
        load_version(store, version)
    with pytest.raises(UntrustedModelError):
        load_model("pickled@1", store=store)

    trusted = store.models.set_trusted(version.id, True)
    np.testing.assert_array_equal(
        load_version(store, trusted)[1].predict(TEST_X), model.predict(TEST_X)
    )
    at_birth = register_model(model, "pickled", flavor="pickle", trusted=True, store=store)
    np.testing.assert_array_equal(
        load_model("pickled@2", store=store).predict(TEST_X), model.predict(TEST_X)
    )
    assert at_birth.version == 2


def test_an_object_of_no_known_flavor_or_an_unknown_flavor_is_refused(store: Store) -> None:
    with pytest.raises(InvalidInputError, match="flavor='pickle'"):
        register_model({"weights": [1, 2]}, "nothing", store=store)
    with pytest.raises(InvalidInputError, match="unknown flavor 'tensorflow'"):
        register_model(LogisticRegression(), "nothing", flavor="tensorflow", store=store)


# -- the model folder -------------------------------------------------------------------


@pytest.mark.parametrize("victim", ["model-file", "manifest"])
def test_materialize_refuses_bytes_altered_in_the_object_store(store: Store, victim: str) -> None:
    model = LogisticRegression(max_iter=500).fit(TRAIN, TRAIN_Y)
    version = register_model(model, "tampered", input_example=TRAIN.head(3), store=store)
    manifest = read_manifest(version.manifest_sha, store.objects)
    sha = manifest.files["model.skops"] if victim == "model-file" else version.manifest_sha
    path = store.objects.local_path(store.objects.uri(sha))
    original = path.read_bytes()
    os.chmod(path, 0o644)  # objects are written read-only
    path.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))

    cache = model_cache(store.settings)
    with pytest.raises(CorruptArtifactError, match=sha[:12]):
        load_version(store, version)
    with pytest.raises(CorruptArtifactError):
        materialize(version.manifest_sha, store.objects, cache)
    assert not (cache / version.manifest_sha).exists()
    assert list(cache.glob(".staging-*")) == []


def test_a_damaged_cached_copy_is_fetched_again(store: Store) -> None:
    model = LogisticRegression(max_iter=500).fit(TRAIN_X, TRAIN_Y)
    version = register_model(model, "cached", store=store)
    manifest, folder = materialize(version.manifest_sha, store.objects, model_cache(store.settings))
    assert json.loads((folder / MANIFEST).read_bytes())["name"] == "cached"
    cached = folder / "model.skops"
    cached.write_bytes(b"not a model")

    np.testing.assert_array_equal(
        load_version(store, version)[1].predict(TEST_X), model.predict(TEST_X)
    )
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == manifest.files["model.skops"]


@pytest.mark.parametrize("rel", ["../escape.bin", "data/../../escape.bin", "ABSOLUTE"])
def test_materialize_refuses_a_manifest_path_escaping_the_folder(
    store: Store, tmp_path: Path, rel: str
) -> None:
    outside = tmp_path / "escape.bin"
    if rel == "ABSOLUTE":
        rel = str(outside)
    sha, _ = store.objects.put_bytes(b"payload that must stay in the store")
    manifest = Manifest(
        name="evil",
        flavor="pickle",
        flavor_meta={"payload": "model.pkl"},
        signature={"inputs": [], "outputs": []},
        files={"model.pkl": sha, rel: sha},
    )
    manifest_sha = save_manifest(manifest, store.objects)
    cache = tmp_path / "cache"
    with pytest.raises(CorruptArtifactError, match="escapes the model folder"):
        materialize(manifest_sha, store.objects, cache)
    assert not outside.exists()
    assert not (cache / manifest_sha).exists()
    assert list(cache.iterdir()) == []  # the staging folder is cleaned up


def test_manifest_json_round_trip_ignores_unknown_fields() -> None:
    manifest = Manifest(
        name="m",
        flavor="sklearn",
        flavor_meta={"payload": "model.skops"},
        signature={"inputs": [{"name": "x", "dtype": "float64", "nullable": False}]},
        files={"model.skops": "0" * 64},
        metrics={"auc": 0.9},
        data_hashes=["a" * 64],
    )
    raw = json.loads(manifest.to_json())
    raw["added_in_a_later_format"] = {"anything": 1}
    again = Manifest.from_json(json.dumps(raw).encode())
    assert again == manifest
    assert again.model_signature.columns == ["x"]


# -- profiles ---------------------------------------------------------------------------


def _profile_input() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(3)
    rows = 500
    gap = rng.normal(10, 2, size=rows)
    gap[::10] = np.nan
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=rows),
            "count": rng.integers(0, 10, size=rows),
            "gap": gap,
            "color": ["red"] * 250 + ["blue"] * 150 + ["green"] * 100,
            "flag": [True] * 300 + [False] * 200,
        }
    )
    predictions = (frame["x"].to_numpy() > 0).astype(np.int64)
    return frame, predictions


def test_profile_numeric_columns() -> None:
    frame, _ = _profile_input()
    profile = profile_frame(frame)
    assert profile["rows"] == 500
    assert list(profile["columns"]) == list(frame.columns)
    for name in ("x", "count", "gap"):
        col = profile["columns"][name]
        assert col["type"] == "numeric"
        finite = frame[name].dropna().to_numpy(dtype=float)
        assert col["count"] == 500
        assert col["missing"] == 500 - finite.size
        values = list(col["quantiles"].values())
        assert list(col["quantiles"]) == [str(q) for q in QUANTILES]
        assert values == sorted(values), f"{name} quantiles are not monotone"
        assert values[0] == col["min"] == finite.min()
        assert values[-1] == col["max"] == finite.max()
        assert col["quantiles"]["0.5"] == pytest.approx(np.median(finite))
        assert sum(col["histogram"]["counts"]) == finite.size
        assert len(col["histogram"]["edges"]) == BINS + 1
        assert col["mean"] == pytest.approx(finite.mean())
        assert col["std"] == pytest.approx(finite.std())
    assert profile["columns"]["gap"]["missing"] == 50
    assert sum(profile["columns"]["x"]["histogram"]["counts"]) == profile["rows"]


def test_profile_categorical_columns_and_predictions() -> None:
    frame, predictions = _profile_input()
    profile = profile_frame(frame, predictions)
    color = profile["columns"]["color"]
    assert color == {
        "type": "categorical",
        "count": 500,
        "missing": 0,
        "distinct": 3,
        "frequencies": {"red": 250, "blue": 150, "green": 100},
    }
    assert profile["columns"]["flag"]["frequencies"] == {"True": 300, "False": 200}
    prediction = profile["prediction"]
    assert prediction["type"] == "numeric"
    assert prediction["count"] == 500
    assert prediction["mean"] == pytest.approx(predictions.mean())
    labels = profile_frame(frame, np.where(predictions == 1, "yes", "no"))["prediction"]
    assert labels["frequencies"] == {
        "yes": int(predictions.sum()),
        "no": int(500 - predictions.sum()),
    }
    json.dumps(profile)  # kept in the manifest, so it must be JSON-able


def test_profile_keeps_the_top_categories_and_handles_empty_columns() -> None:
    many = [f"c{i:03d}" for i in range(TOP + 10) for _ in range(i + 1)]
    frame = pd.DataFrame({"cat": many, "none": [math.nan] * len(many)})
    profile = profile_frame(frame)
    cat = profile["columns"]["cat"]
    assert cat["distinct"] == TOP + 10
    assert len(cat["frequencies"]) == TOP
    assert next(iter(cat["frequencies"])) == f"c{TOP + 9:03d}"  # the most frequent first
    assert profile["columns"]["none"] == {
        "type": "numeric",
        "count": len(many),
        "missing": len(many),
    }
    missing = profile_frame(pd.DataFrame({"s": ["a", None, "a"]}))["columns"]["s"]
    assert (missing["missing"], missing["frequencies"]) == (1, {"a": 2})
