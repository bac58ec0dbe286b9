"""Round trips through the materializers, and the refusals that keep loading safe."""

from __future__ import annotations

import builtins
import datetime
import io
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from treadle.errors import CorruptArtifactError, InvalidInputError
from treadle.store.artifacts import ArtifactStore
from treadle.store.materializers import (
    MATERIALIZERS,
    Saved,
    load,
    save,
    to_json_bytes,
    type_name,
)
from treadle.types import ArtifactKind


@pytest.fixture
def objects(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


def round_trip(value: Any, objects: ArtifactStore, **kwargs: Any) -> tuple[Saved, Any]:
    saved = save(value, objects, **kwargs)
    assert objects.exists(saved.sha256)
    assert len(objects.get_bytes(saved.sha256)) == saved.size
    return saved, load(
        saved.materializer,
        saved.sha256,
        objects,
        allow_pickle=kwargs.get("allow_pickle", False),
    )


def test_dataframe_round_trips_through_parquet(objects: ArtifactStore) -> None:
    df = pd.DataFrame(
        {
            "x": [1.5, 2.5, math.nan],
            "n": np.array([1, 2, 3], dtype="int64"),
            "label": ["a", "b", "ç"],
            "when": pd.to_datetime(["2024-01-01", "2024-06-30", "2025-12-31"]),
        },
        index=pd.Index([10, 20, 30], name="row"),
    )
    saved, back = round_trip(df, objects)

    assert (saved.materializer, saved.kind) == ("parquet", ArtifactKind.DATASET)
    assert saved.python_type == "pandas.DataFrame"
    assert objects.get_bytes(saved.sha256)[:4] == b"PAR1"
    pd.testing.assert_frame_equal(back, df)


def test_numpy_round_trip_keeps_dtype_and_shape(objects: ArtifactStore) -> None:
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    saved, back = round_trip(arr, objects)

    assert (saved.materializer, saved.kind) == ("numpy", ArtifactKind.DATASET)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, arr)

    strings = np.array(["a", "bb", "ccc"])
    _, back_strings = round_trip(strings, objects)
    np.testing.assert_array_equal(back_strings, strings)


def test_numpy_object_arrays_are_refused(objects: ArtifactStore) -> None:
    with pytest.raises(InvalidInputError, match="pickle"):
        save(np.array([{"a": 1}, None], dtype=object), objects)
    assert not any(p.is_file() for p in (objects.root / "objects").rglob("*"))


def test_numpy_load_refuses_a_pickled_object_array(objects: ArtifactStore) -> None:
    buf = io.BytesIO()
    np.save(buf, np.array([object()], dtype=object), allow_pickle=True)
    digest, _ = objects.put_bytes(buf.getvalue())
    with pytest.raises(ValueError, match="pickle"):
        load("numpy", digest, objects, allow_pickle=False)


@pytest.mark.slow
def test_sklearn_estimator_round_trips_through_skops(objects: ArtifactStore) -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 4))
    labels = (features[:, 0] + features[:, 1] > 0).astype(int)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(features, labels)

    saved, back = round_trip(model, objects)

    assert (saved.materializer, saved.kind) == ("skops", ArtifactKind.MODEL)
    assert saved.python_type == "sklearn.pipeline.Pipeline"
    assert back is not model
    np.testing.assert_array_equal(back.predict(features), model.predict(features))
    np.testing.assert_allclose(back.predict_proba(features), model.predict_proba(features))


def test_skops_model_with_an_untrusted_type_is_refused(objects: ArtifactStore) -> None:
    model = FunctionTransformer(func=math.sqrt)
    digest, _ = objects.put_bytes(skops.io.dumps(model))

    with pytest.raises(CorruptArtifactError, match=r"math\.sqrt"):
        load("skops", digest, objects, allow_pickle=True)


def test_skops_model_referencing_eval_is_refused(objects: ArtifactStore) -> None:
    model = FunctionTransformer(func=builtins.eval)
    assert skops.io.get_untrusted_types(data=skops.io.dumps(model)) == ["builtins.eval"]
    digest, _ = objects.put_bytes(skops.io.dumps(model))

    with pytest.raises(CorruptArtifactError):
        load("skops", digest, objects, allow_pickle=False)


def test_bytes_round_trip(objects: ArtifactStore) -> None:
    data = bytes(range(256))
    saved, back = round_trip(data, objects)
    assert (saved.materializer, saved.kind, saved.size) == ("bytes", ArtifactKind.FILE, 256)
    assert back == data

    saved_ba, back_ba = round_trip(bytearray(b"mutable"), objects)
    assert (saved_ba.materializer, back_ba) == ("bytes", b"mutable")


def test_path_to_a_file_round_trips(objects: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "report.html"
    src.write_text("<h1>ok</h1>")
    saved, back = round_trip(src, objects, kind=ArtifactKind.REPORT)

    assert (saved.materializer, saved.kind, saved.size) == ("file", ArtifactKind.REPORT, 11)
    assert isinstance(back, Path)
    assert back != src
    assert back.read_text() == "<h1>ok</h1>"


def test_path_that_is_not_a_file_is_refused(objects: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        save(tmp_path, objects)
    with pytest.raises(InvalidInputError):
        save(tmp_path / "missing.txt", objects)


def test_json_values_round_trip_including_numpy_scalars(objects: ArtifactStore) -> None:
    value = {
        "int": np.int64(7),
        "float": np.float32(0.5),
        "bool": np.bool_(True),
        "nested": [1, "two", None, {"x": 3.25}],
        "unicode": "héllo",
    }
    saved, back = round_trip(value, objects)

    assert (saved.materializer, saved.kind) == ("json", ArtifactKind.VALUE)
    assert back == {
        "int": 7,
        "float": 0.5,
        "bool": True,
        "nested": [1, "two", None, {"x": 3.25}],
        "unicode": "héllo",
    }
    assert type(back["int"]) is int
    assert type(back["bool"]) is bool


@pytest.mark.parametrize("value", [3, 2.5, "text", None, True, [1, 2], {"k": [1, {"v": 2}]}])
def test_plain_json_values(objects: ArtifactStore, value: Any) -> None:
    saved, back = round_trip(value, objects)
    assert saved.materializer == "json"
    assert back == value


def test_json_nan_round_trips(objects: ArtifactStore) -> None:
    _, back = round_trip({"loss": math.nan}, objects)
    assert math.isnan(back["loss"])


def test_json_is_canonical(objects: ArtifactStore) -> None:
    a = {"b": 1, "a": {"y": 2, "x": [3, 4]}}
    b = {"a": {"x": [3, 4], "y": 2}, "b": 1}

    assert to_json_bytes(a) == to_json_bytes(b) == b'{"a":{"x":[3,4],"y":2},"b":1}'
    assert save(a, objects).sha256 == save(b, objects).sha256
    assert save(a, objects).sha256 != save({"a": {"x": [4, 3], "y": 2}, "b": 1}, objects).sha256


def test_kind_override(objects: ArtifactStore) -> None:
    saved = save({"acc": 0.9}, objects, kind=ArtifactKind.METRICS)
    assert (saved.materializer, saved.kind) == ("json", ArtifactKind.METRICS)


def test_pickle_is_refused_on_save_without_opt_in(objects: ArtifactStore) -> None:
    with pytest.raises(InvalidInputError, match=r"builtins\.set"):
        save({1, 2, 3}, objects)
    assert not any(p.is_file() for p in (objects.root / "objects").rglob("*"))


def test_pickle_is_allowed_with_opt_in(objects: ArtifactStore) -> None:
    value = {"when": datetime.date(2024, 2, 29), "tags": {"a", "b"}}
    saved, back = round_trip(value, objects, allow_pickle=True)

    assert (saved.materializer, saved.kind) == ("pickle", ArtifactKind.VALUE)
    assert saved.python_type == "builtins.dict"
    assert back == value


def test_pickle_is_refused_on_load_without_opt_in(objects: ArtifactStore, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Touch(str(marker)))
    digest, _ = objects.put_bytes(payload)

    with pytest.raises(InvalidInputError, match="pickle"):
        load("pickle", digest, objects, allow_pickle=False)
    assert not marker.exists()

    load("pickle", digest, objects, allow_pickle=True)
    assert marker.exists()


class _Touch:
    """Creates a file when unpickled, so a test can tell whether a pickle was loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.path),))


def test_unknown_materializer_is_refused(objects: ArtifactStore) -> None:
    digest, _ = objects.put_bytes(b"{}")
    with pytest.raises(InvalidInputError, match="yaml"):
        load("yaml", digest, objects, allow_pickle=True)


def test_load_checks_the_hash(objects: ArtifactStore) -> None:
    saved = save({"a": 1}, objects)
    path = objects.root / "objects" / saved.sha256[:2] / saved.sha256
    path.chmod(0o644)
    path.write_bytes(b'{"a":2}')
    for materializer in ("json", "bytes", "file"):
        with pytest.raises(CorruptArtifactError):
            load(materializer, saved.sha256, objects, allow_pickle=False)


def test_every_materializer_has_a_loader() -> None:
    assert set(MATERIALIZERS) == {"json", "parquet", "numpy", "skops", "bytes", "file", "pickle"}
    assert type_name(pd.DataFrame()) == "pandas.DataFrame"
