"""A policy: the closed loop a project writes down, in YAML (or a Python dict).

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
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from treadle.errors import InvalidInputError

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
