"""A policy: the closed loop a project writes down, in YAML or in Python.

    name: retrain-on-drift
    on:
      event: monitor.alert                       # the default
      where: {monitor: churn-monitor, alert: drift}
    run:
      pipeline: training
      params: {since: $event.window.start, deployment: $event.deployment}
    register:
      model: churn
      alias: challenger
      require: ["accuracy >= champion.accuracy - 0.01"]
    canary:
      deployment: churn-api
      percent: 20
      requests: 500          # labelled predictions the challenger must answer
      timeout: 600           # seconds; then it rolls back
    promote:
      alias: champion
      metric: accuracy       # live: accuracy, f1, auc (higher wins) or mae, rmse (lower)
      margin: 0.0            # the challenger wins when it is at least the champion's - margin

Nothing in it names a particular pipeline, model or threshold: another project's loop is
another policy. `canary` and `promote` are optional (without `canary` the challenger is
promoted on its gate alone; without `promote` it stays the challenger).

A Python policy file defines `policy` (or `policies`, a list) as dicts of the same shape,
usually built with `treadle.loop.define_policy` and its section functions; `read_policies`
imports it and gives the documents, checked, as a YAML file's would be.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
import traceback
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from treadle.errors import InvalidInputError, NotFoundError, describe

LOWER_IS_BETTER = {"mae", "rmse"}
LIVE_METRICS = {"accuracy", "f1", "auc", "mae", "rmse"}


@dataclasses.dataclass(frozen=True)
class Canary:
    deployment: str
    percent: float
    requests: int
    timeout: float


@dataclasses.dataclass(frozen=True)
class Promote:
    alias: str
    metric: str
    margin: float


@dataclasses.dataclass(frozen=True)
class Policy:
    name: str
    event: str
    where: dict[str, str]
    pipeline: str
    params: dict[str, str]
    model: str
    alias: str
    require: list[str]
    canary: Canary | None
    promote: Promote | None


def _table(raw: Mapping[str, Any], key: str, required: bool = True) -> dict[str, Any]:
    value = raw.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise InvalidInputError(f"policy: {key!r} must be a mapping", f"see `{key}:` in the docs")
    return value


def _text(raw: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"policy: {where}.{key} must be a non-empty string")
    return value.strip()


def _number(
    raw: Mapping[str, Any], key: str, where: str, default: float, low: float, high: float
) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidInputError(f"policy: {where}.{key} must be a number from {low} to {high}")
    return float(value)


def parse(raw: Any) -> Policy:
    """A checked policy from its parsed YAML/JSON, or an error naming the field."""
    from treadle.registry.gates import parse as parse_condition

    if not isinstance(raw, dict):
        raise InvalidInputError("policy: the document must be a mapping")
    if True in raw and "on" not in raw:  # YAML 1.1 reads a bare `on:` key as true
        raw = {("on" if k is True else k): v for k, v in raw.items()}
    known = {"name", "on", "run", "register", "canary", "promote"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InvalidInputError(
            f"policy: {unknown[0]!r} is not a policy section", f"known: {sorted(known)}"
        )
    on = _table(raw, "on", required=False)
    run = _table(raw, "run")
    register = _table(raw, "register")
    where = on.get("where", {})
    params = run.get("params", {})
    for name, value in (("on.where", where), ("run.params", params)):
        if not isinstance(value, dict):
            raise InvalidInputError(f"policy: {name} must be a mapping")
    require = register.get("require", [])
    if isinstance(require, str):
        require = [require]
    if not isinstance(require, list) or not all(isinstance(c, str) for c in require):
        raise InvalidInputError("policy: register.require must be a list of conditions")
    for condition in require:
        try:
            parse_condition(condition)
        except InvalidInputError as exc:
            raise InvalidInputError(f"policy: register.require: {exc.message}", exc.hint) from None
    canary = None
    if raw.get("canary") is not None:
        c = _table(raw, "canary")
        canary = Canary(
            deployment=_text(c, "deployment", "canary"),
            percent=_number(c, "percent", "canary", 10, 0.1, 99.9),
            requests=int(_number(c, "requests", "canary", 100, 1, 10_000_000)),
            timeout=_number(c, "timeout", "canary", 600, 1, 30 * 86400),
        )
    promote = None
    if raw.get("promote") is not None:
        p = _table(raw, "promote")
        metric = _text(p, "metric", "promote", "accuracy")
        if metric not in LIVE_METRICS:
            raise InvalidInputError(
                f"policy: promote.metric {metric!r} is not one of {sorted(LIVE_METRICS)}"
            )
        promote = Promote(
            alias=_text(p, "alias", "promote", "champion"),
            metric=metric,
            margin=_number(p, "margin", "promote", 0.0, -1e9, 1e9),
        )
    if promote is not None and canary is None:
        raise InvalidInputError(
            "policy: promote compares live metrics, which needs a canary section",
            "add canary: {deployment: ..., percent: 20, requests: 500}",
        )
    return Policy(
        name=_text(raw, "name", "policy"),
        event=_text(on, "event", "on", "monitor.alert"),
        where={str(k): str(v) for k, v in where.items()},
        pipeline=_text(run, "pipeline", "run"),
        params={str(k): v if isinstance(v, str) else json.dumps(v) for k, v in params.items()},
        model=_text(register, "model", "register"),
        alias=_text(register, "alias", "register", "challenger"),
        require=list(require),
        canary=canary,
        promote=promote,
    )


def load_text(text: str) -> dict[str, Any]:
    """The document of a policy file (YAML, which JSON also is)."""
    import yaml

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"policy: the file is not YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidInputError("policy: the file must hold a mapping")
    raw = {("on" if k is True else k): v for k, v in raw.items()}
    parse(raw)
    return raw


def plain(value: Any, where: str = "") -> Any:
    """`value` as JSON holds it (tuples become lists), or an error naming the field that
    holds something else: what a policy document may contain, written in any language."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInputError(
                    f"policy: {where or 'the document'} has the key {key!r}, not a string"
                )
            out[key] = plain(item, f"{where}.{key}" if where else key)
        return out
    if isinstance(value, list | tuple):
        return [plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise InvalidInputError(
        f"policy: {where or 'the document'} is a {type(value).__name__}, not a value a "
        "policy can hold",
        "use strings, numbers, booleans, lists and dicts (str() a path or a date)",
    )


HOW_TO_DEFINE = (
    "define `policy = define_policy(...)` (from treadle.loop) or a dict in the YAML's "
    "shape; for several, `policies = [...]`"
)


def read_policies(path: Path) -> list[dict[str, Any]]:
    """The checked policy documents of a file: a YAML (or JSON) file holds one; a `.py`
    file defines `policy` (one) or `policies` (a list), imported as a fresh module with
    the file's folder importable."""
    if not path.is_file():
        raise NotFoundError(f"no policy file {path}", "check the path")
    if path.suffix != ".py":
        return [load_text(path.read_text())]
    found = {k: v for k, v in vars(_import_fresh(path)).items() if k in ("policy", "policies")}
    if len(found) == 2:
        raise InvalidInputError(
            f"policy file {path} defines both `policy` and `policies`",
            "keep `policy` for one policy, or put them all in `policies = [...]`",
        )
    if not found:
        raise InvalidInputError(
            f"policy file {path} defines neither `policy` nor `policies`", HOW_TO_DEFINE
        )
    if "policy" in found:
        documents = [("`policy`", found["policy"])]
    else:
        many = found["policies"]
        if not isinstance(many, list | tuple):
            raise InvalidInputError(
                f"policy file {path}: `policies` must be a list of policies, not {_kind(many)}",
                HOW_TO_DEFINE,
            )
        if not many:
            raise InvalidInputError(
                f"policy file {path}: `policies` is an empty list", HOW_TO_DEFINE
            )
        documents = [(f"`policies[{i}]`", one) for i, one in enumerate(many)]
    specs: list[dict[str, Any]] = []
    named: dict[str, str] = {}
    for label, document in documents:
        if not isinstance(document, Mapping):
            raise InvalidInputError(
                f"policy file {path}: {label} is {_kind(document)}, not a policy", HOW_TO_DEFINE
            )
        try:
            spec = plain(document)
            name = parse(spec).name
        except InvalidInputError as exc:
            raise InvalidInputError(
                exc.message, _joined(exc.hint, f"in {label} of {path}")
            ) from None
        if name in named:
            raise InvalidInputError(
                f"policy file {path}: {named[name]} and {label} are both named {name!r}",
                "give each policy a name of its own",
            )
        named[name] = label
        specs.append(spec)
    return specs


def _kind(value: Any) -> str:
    if value is None:
        return "None"
    kind = type(value).__name__
    return f"{'an' if kind[0] in 'aeiouAEIOU' else 'a'} {kind}"


def _joined(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def _import_fresh(path: Path) -> ModuleType:
    """Run a Python file as a new module of its own (never one imported before), with its
    folder first on sys.path while it runs."""
    resolved = path.resolve()
    name = f"treadle_policy_{resolved.stem}_{uuid.uuid4().hex[:12]}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise InvalidInputError(f"policy file {path} cannot be imported", "is it a Python file?")
    module = importlib.util.module_from_spec(spec)
    folder = str(resolved.parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except InvalidInputError as exc:  # a builder refused a field: the YAML's error
        raise InvalidInputError(
            exc.message, _joined(exc.hint, f"at {_line_of(exc, resolved, path)}")
        ) from exc
    except (Exception, SystemExit) as exc:
        raise InvalidInputError(
            f"policy file {path} failed to import: {describe(exc)}",
            f"at {_line_of(exc, resolved, path)}; `python {path}` shows the whole traceback",
        ) from exc
    finally:
        sys.modules.pop(name, None)
        if added and folder in sys.path:
            sys.path.remove(folder)
    return module


def _line_of(exc: BaseException, resolved: Path, shown: Path) -> str:
    """`FILE:LINE` of the policy file's line that raised (or did not compile)."""
    line = None
    if isinstance(exc, SyntaxError) and exc.filename == str(resolved):
        line = exc.lineno
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == str(resolved):
            line = frame.lineno
    return f"{shown}:{line}" if line else str(shown)
