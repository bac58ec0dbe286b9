"""Model flavors: how a model of each kind is saved into a folder and loaded back.

| flavor  | what it takes                                          | loads with                  |
|---------|--------------------------------------------------------|-----------------------------|
| sklearn | a scikit-learn estimator                               | skops, with the exact list  |
|         |                                                        | of types recorded at save   |
| onnx    | an `onnx.ModelProto`, ONNX bytes or a path to .onnx    | onnxruntime                 |
| python  | an object with `save(path)`, whose class has           | the class, imported by      |
|         | `load(path)` and `predict(frame)`                      | reference                   |
| pickle  | anything (opt-in)                                      | pickle, only when trusted   |

A loaded model is anything with `predict(X)`, X being what the signature check makes.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from treadle.errors import InvalidInputError, TreadleError
from treadle.store.materializers import loaded_type

FLAVORS = ("sklearn", "onnx", "python", "pickle")

# Types a scikit-learn model may hold beyond what skops trusts by itself; never builtins
# (a FunctionTransformer(func=builtins.eval) would run eval on its input).
TRUSTED_MODULES = ("sklearn.", "numpy.", "scipy.")


class LoadedModel(Protocol):
    def predict(self, X: Any) -> Any: ...


class UntrustedModelError(TreadleError):
    http_status = 403


def detect_flavor(model: Any) -> str:
    estimator = loaded_type("sklearn.base", "BaseEstimator")
    if estimator is not None and isinstance(model, estimator):
        return "sklearn"
    proto = loaded_type("onnx", "ModelProto")
    if (proto is not None and isinstance(model, proto)) or (
        isinstance(model, str | Path) and str(model).endswith(".onnx")
    ):
        return "onnx"
    if callable(getattr(model, "save", None)) and callable(getattr(type(model), "load", None)):
        return "python"
    raise InvalidInputError(
        f"treadle does not know how to save a {type(model).__module__}."
        f"{type(model).__qualname__} as a model",
        "give a scikit-learn estimator, an ONNX model, an object with save(path) whose class "
        "has load(path) and predict(frame), or flavor='pickle' to opt in to pickle",
    )


# -- saving -----------------------------------------------------------------------------


def _save_sklearn(model: Any, folder: Path) -> dict[str, Any]:
    import skops.io

    path = folder / "model.skops"
    skops.io.dump(model, path)
    untrusted = sorted(skops.io.get_untrusted_types(file=path))
    refused = [t for t in untrusted if not t.startswith(TRUSTED_MODULES)]
    import sklearn

    return {
        "payload": "model.skops",
        "trusted_types": [t for t in untrusted if t.startswith(TRUSTED_MODULES)],
        "refused_types": refused,
        "requirements": [f"scikit-learn=={sklearn.__version__}", "skops"],
    }


def _save_onnx(model: Any, folder: Path) -> dict[str, Any]:
    path = folder / "model.onnx"
    if isinstance(model, bytes):
        path.write_bytes(model)
    elif isinstance(model, str | Path):
        path.write_bytes(Path(model).read_bytes())
    else:
        path.write_bytes(model.SerializeToString())
    return {"payload": "model.onnx", "requirements": ["onnxruntime"]}


def _save_python(model: Any, folder: Path) -> dict[str, Any]:
    cls = type(model)
    data = folder / "data"
    data.mkdir()
    model.save(data)
    return {
        "payload": "data",
        "class": f"{cls.__module__}:{cls.__qualname__}",
        "requirements": list(getattr(model, "requirements", []) or []),
    }


def _save_pickle(model: Any, folder: Path) -> dict[str, Any]:
    import pickle

    (folder / "model.pkl").write_bytes(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
    return {"payload": "model.pkl", "requirements": []}


_SAVERS: dict[str, Callable[[Any, Path], dict[str, Any]]] = {
    "sklearn": _save_sklearn,
    "onnx": _save_onnx,
    "python": _save_python,
    "pickle": _save_pickle,
}


def save(model: Any, folder: Path, flavor: str | None = None) -> tuple[str, dict[str, Any]]:
    """Write `model` into `folder`; returns the flavor and what its loader needs."""
    flavor = flavor or detect_flavor(model)
    if flavor not in _SAVERS:
        raise InvalidInputError(f"unknown flavor {flavor!r}", f"use one of {', '.join(FLAVORS)}")
    return flavor, _SAVERS[flavor](model, folder)


# -- loading ----------------------------------------------------------------------------


class _SklearnModel:
    def __init__(self, model: Any) -> None:
        self.model = model
        # The server hands numpy arrays in signature order to models fitted on
        # DataFrames; the columns match, so the feature-name warning is noise.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")

    def predict(self, X: Any) -> Any:
        return self.model.predict(X)


def _load_sklearn(folder: Path, meta: dict[str, Any], trusted: bool) -> LoadedModel:
    import skops.io

    path = folder / meta["payload"]
    found = sorted(skops.io.get_untrusted_types(file=path))
    if meta.get("refused_types") and not trusted:
        raise UntrustedModelError(
            f"the model holds types treadle does not load by default: "
            f"{', '.join(meta['refused_types'])}",
            "mark the version trusted (`treadle models trust NAME VERSION`) to load it",
        )
    recorded = set(meta.get("trusted_types", [])) | set(meta.get("refused_types", []))
    unexpected = [t for t in found if t not in recorded]
    if unexpected and not trusted:
        raise UntrustedModelError(
            f"the model file holds types that were not recorded when it was saved: "
            f"{', '.join(unexpected)}",
            "mark the version trusted only if you know where the file came from",
        )
    return _SklearnModel(skops.io.load(path, trusted=found))


class _OnnxModel:
    def __init__(self, path: Path) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = self.session.get_inputs()
        self.output = self.session.get_outputs()[0].name

    def predict(self, X: Any) -> Any:
        import numpy as np

        if len(self.inputs) == 1:
            feed = {self.inputs[0].name: np.asarray(X, dtype=np.float32)}
        else:  # one input per column, as skl2onnx makes for DataFrames
            array = np.asarray(X)
            feed = {
                spec.name: array[:, i : i + 1].astype(np.float32)
                for i, spec in enumerate(self.inputs)
            }
        return self.session.run([self.output], feed)[0]


def _load_onnx(folder: Path, meta: dict[str, Any], trusted: bool) -> LoadedModel:
    return _OnnxModel(folder / meta["payload"])


def _load_python(folder: Path, meta: dict[str, Any], trusted: bool) -> LoadedModel:
    module_name, _, qualname = meta["class"].partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInputError(
            f"cannot import {module_name!r} to load the model: {exc}",
            "install the package that defines the model class where the server runs",
        ) from exc
    for part in qualname.split("."):
        obj = getattr(obj, part)
    loaded: LoadedModel = obj.load(folder / meta["payload"])
    return loaded


def _load_pickle(folder: Path, meta: dict[str, Any], trusted: bool) -> LoadedModel:
    if not trusted:
        raise UntrustedModelError(
            "this model version is a pickle and is not marked trusted",
            "mark it trusted (`treadle models trust NAME VERSION`) if you know its origin",
        )
    import pickle

    model: LoadedModel = pickle.loads((folder / meta["payload"]).read_bytes())
    return model


_LOADERS: dict[str, Callable[[Path, dict[str, Any], bool], LoadedModel]] = {
    "sklearn": _load_sklearn,
    "onnx": _load_onnx,
    "python": _load_python,
    "pickle": _load_pickle,
}


def load(flavor: str, folder: Path, meta: dict[str, Any], *, trusted: bool) -> LoadedModel:
    try:
        loader = _LOADERS[flavor]
    except KeyError:
        raise InvalidInputError(f"unknown flavor {flavor!r}") from None
    return loader(folder, meta, trusted)
