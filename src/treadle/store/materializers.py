"""Materializers: how a Python value becomes artifact bytes and back.

| value                         | materializer | bytes                 | kind    |
|-------------------------------|--------------|-----------------------|---------|
| pandas.DataFrame              | parquet      | Parquet (pyarrow)     | dataset |
| numpy.ndarray                 | numpy        | .npy, no pickle       | dataset |
| scikit-learn estimator        | skops        | skops                 | model   |
| bytes                         | bytes        | as they are           | file    |
| pathlib.Path to a file        | file         | the file's bytes      | file    |
| JSON-able (dict, list, str..) | json         | canonical JSON        | value   |
| anything else, on opt-in      | pickle       | pickle (recorded so)  | value   |

Heavy libraries are imported only when a value of theirs is met: a value cannot be a
DataFrame unless pandas is already imported.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from treadle.errors import CorruptArtifactError, InvalidInputError
from treadle.store.artifacts import ArtifactStore
from treadle.types import ArtifactKind

# skops refuses to load types it does not know. Beyond what skops trusts by itself, a
# model saved by treadle may hold types from these libraries and nothing else: never
# builtins (a FunctionTransformer(func=builtins.eval) would run eval on its input).
TRUSTED_MODEL_MODULES = ("sklearn.", "numpy.", "scipy.")


@dataclasses.dataclass(frozen=True)
class Saved:
    materializer: str
    kind: ArtifactKind
    python_type: str
    sha256: str
    size: int


def type_name(value: Any) -> str:
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"


def loaded_type(module: str, name: str) -> Any:
    """`module.name` if the module is imported already, else None (a value of a type
    whose module nobody imported cannot be of that type). A module that another thread
    is still importing is waited for: importing it blocks until that import is done."""
    found = sys.modules.get(module)
    if found is None:
        return None
    cls = getattr(found, name, None)
    if cls is None:
        cls = getattr(importlib.import_module(module), name, None)
    return cls


def _is_dataframe(value: Any) -> bool:
    frame = loaded_type("pandas", "DataFrame")
    return frame is not None and isinstance(value, frame)


def _is_ndarray(value: Any) -> bool:
    array = loaded_type("numpy", "ndarray")
    return array is not None and isinstance(value, array)


def _is_estimator(value: Any) -> bool:
    estimator = loaded_type("sklearn.base", "BaseEstimator")
    return estimator is not None and isinstance(value, estimator)


def _json_default(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item) and type(value).__module__ == "numpy":
        return item()
    raise TypeError(f"{type_name(value)} is not JSON-able")


def to_json_bytes(value: Any) -> bytes:
    """Canonical JSON: sorted keys, no spaces, so equal values hash equally."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), default=_json_default, allow_nan=True
    ).encode()


def _save_dataframe(value: Any) -> bytes:
    buf = io.BytesIO()
    value.to_parquet(buf, engine="pyarrow", index=True)
    return buf.getvalue()


def _save_ndarray(value: Any) -> bytes:
    import numpy as np

    if value.dtype.hasobject:
        raise InvalidInputError(
            "a numpy array of Python objects cannot be saved without pickle",
            "convert it to a numeric or string dtype, or opt in to pickle",
        )
    buf = io.BytesIO()
    np.save(buf, value, allow_pickle=False)
    return buf.getvalue()


def _save_estimator(value: Any) -> bytes:
    import skops.io

    return bytes(skops.io.dumps(value))


def _save_pickle(value: Any) -> bytes:
    import pickle

    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def save(
    value: Any,
    objects: ArtifactStore,
    *,
    allow_pickle: bool = False,
    kind: ArtifactKind | None = None,
) -> Saved:
    """Write `value` to the object store with the first materializer that fits it."""
    name: str
    data: bytes | None = None
    default_kind = ArtifactKind.VALUE
    if _is_dataframe(value):
        name, data, default_kind = "parquet", _save_dataframe(value), ArtifactKind.DATASET
    elif _is_ndarray(value):
        name, data, default_kind = "numpy", _save_ndarray(value), ArtifactKind.DATASET
    elif _is_estimator(value):
        name, data, default_kind = "skops", _save_estimator(value), ArtifactKind.MODEL
    elif isinstance(value, bytes | bytearray):
        name, data, default_kind = "bytes", bytes(value), ArtifactKind.FILE
    elif isinstance(value, Path):
        if not value.is_file():
            raise InvalidInputError(
                f"{value} is not a file", "return a path to a file (zip a folder first)"
            )
        sha, size = objects.put_file(value)
        return Saved("file", kind or ArtifactKind.FILE, type_name(value), sha, size)
    else:
        try:
            name, data = "json", to_json_bytes(value)
        except (TypeError, ValueError):
            if not allow_pickle:
                raise InvalidInputError(
                    f"treadle cannot save a {type_name(value)} without pickle",
                    "return a DataFrame, numpy array, scikit-learn model, bytes, a Path or "
                    "JSON-able data, or opt in with StepOptions(allow_pickle=True)",
                ) from None
            name, data = "pickle", _save_pickle(value)
    sha, size = objects.put_bytes(data)
    return Saved(name, kind or default_kind, type_name(value), sha, size)


def _load_skops(objects: ArtifactStore, sha: str) -> Any:
    import skops.io

    data = objects.get_bytes(sha)
    untrusted = skops.io.get_untrusted_types(data=data)
    refused = [t for t in untrusted if not t.startswith(TRUSTED_MODEL_MODULES)]
    if refused:
        raise CorruptArtifactError(
            f"the model holds types treadle does not trust: {', '.join(refused)}",
            "load it yourself with skops.io.load(..., trusted=[...]) after checking them",
        )
    return skops.io.loads(data, trusted=untrusted)


def _load_parquet(objects: ArtifactStore, sha: str) -> Any:
    import pandas as pd

    return pd.read_parquet(objects.verified_path(sha), engine="pyarrow")


def _load_numpy(objects: ArtifactStore, sha: str) -> Any:
    import numpy as np

    return np.load(io.BytesIO(objects.get_bytes(sha)), allow_pickle=False)


def _load_pickle(objects: ArtifactStore, sha: str) -> Any:
    import pickle

    return pickle.loads(objects.get_bytes(sha))


_LOADERS: dict[str, Callable[[ArtifactStore, str], Any]] = {
    "json": lambda objects, sha: json.loads(objects.get_bytes(sha)),
    "parquet": _load_parquet,
    "numpy": _load_numpy,
    "skops": _load_skops,
    "bytes": lambda objects, sha: objects.get_bytes(sha),
    "file": lambda objects, sha: objects.verified_path(sha),
    "pickle": _load_pickle,
}


MATERIALIZERS = tuple(_LOADERS)
"""The names a stored artifact's `materializer` field may hold."""


def load(materializer: str, sha: str, objects: ArtifactStore, *, allow_pickle: bool) -> Any:
    """Read a value back, verifying its hash. Pickles load only when `allow_pickle`."""
    if materializer == "pickle" and not allow_pickle:
        raise InvalidInputError(
            f"artifact {sha[:12]} is a pickle and pickles are not loaded by default",
            "set StepOptions(allow_pickle=True) on the step that reads it if you trust it",
        )
    try:
        loader = _LOADERS[materializer]
    except KeyError:
        raise InvalidInputError(f"unknown materializer {materializer!r}") from None
    return loader(objects, sha)
