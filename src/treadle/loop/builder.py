"""Policies in Python: small functions that build the document a YAML policy file holds.

    from treadle.loop import canary, define_policy, from_event, on_alert, promote
    from treadle.loop import register, retrain

    policy = define_policy(
        "retrain-on-drift",
        on=on_alert(monitor="churn-monitor", alert="drift"),
        run=retrain("training", params={"since": from_event("window.start")}),
        register=register("churn", require=["accuracy >= champion.accuracy - 0.01"]),
        canary=canary("churn-api", percent=20, requests=500),
        promote=promote(metric="accuracy"),
    )

Each function returns its section as the YAML writes it, with the YAML's defaults filled
in; `define_policy` checks the whole (the same errors, naming the same fields, as for a
YAML file) and returns the plain dict: the platform stores and runs the same policy
whichever way it was written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from treadle.errors import InvalidInputError
from treadle.loop.policy import parse, plain


class OnSpec(TypedDict):
    event: str
    where: dict[str, Any]


class RunSpec(TypedDict):
    pipeline: str
    params: dict[str, Any]


class RegisterSpec(TypedDict):
    model: str
    alias: str
    require: list[str]


class CanarySpec(TypedDict):
    deployment: str
    percent: float
    requests: int
    timeout: float


class PromoteSpec(TypedDict):
    alias: str
    metric: str
    margin: float


class _Sections(TypedDict):
    name: str
    on: OnSpec
    run: RunSpec
    register: RegisterSpec


class PolicySpec(_Sections, total=False):
    """A policy document: what a YAML policy file holds once read."""

    canary: CanarySpec
    promote: PromoteSpec


def on_event(event: str = "monitor.alert", *, where: Mapping[str, Any] | None = None) -> OnSpec:
    """Act on events of one kind whose payload has each value of `where` at its dotted
    path (`on:` in YAML)."""
    return {"event": event, "where": dict(where or {})}


def on_alert(
    monitor: str | None = None, alert: str | None = None, *, where: Mapping[str, Any] | None = None
) -> OnSpec:
    """Act on the alerts of a monitor (all of its alerts without `alert`; every monitor's
    without `monitor`). `where` adds other payload fields, e.g. {"deployment": "churn-api"}."""
    named = {"monitor": monitor, "alert": alert}
    return on_event(
        "monitor.alert",
        where={**(where or {}), **{k: v for k, v in named.items() if v is not None}},
    )


def from_event(field: str) -> str:
    """A run parameter taken from the event that started the policy run, by its dotted
    path: from_event("window.start") is "$event.window.start"."""
    if not isinstance(field, str) or not field.strip():
        raise InvalidInputError("policy: from_event needs a field, e.g. 'window.start'")
    return f"$event.{field.strip()}"


def retrain(pipeline: str, *, params: Mapping[str, Any] | None = None) -> RunSpec:
    """Start the current version of `pipeline` with these parameters (`run:` in YAML);
    a value may come from the event: params={"since": from_event("window.start")}."""
    return {"pipeline": pipeline, "params": dict(params or {})}


def register(
    model: str, *, alias: str = "challenger", require: str | Sequence[str] = ()
) -> RegisterSpec:
    """Give the run's new version of `model` the alias, if it passes every condition of
    `require`, e.g. "rmse <= 80" or "accuracy >= champion.accuracy - 0.01"."""
    return {
        "model": model,
        "alias": alias,
        "require": [require] if isinstance(require, str) else list(require),
    }


def canary(
    deployment: str, *, percent: float = 10, requests: int = 100, timeout: float = 600
) -> CanarySpec:
    """Send `percent` of the deployment's traffic to the new version until it has answered
    `requests` labelled requests; roll back after `timeout` seconds."""
    return {"deployment": deployment, "percent": percent, "requests": requests, "timeout": timeout}


def promote(
    *, alias: str = "champion", metric: str = "accuracy", margin: float = 0.0
) -> PromoteSpec:
    """Move `alias` to the new version if its live `metric` is at least the champion's
    minus `margin` (accuracy, f1, auc: higher wins; mae, rmse: lower wins)."""
    return {"alias": alias, "metric": metric, "margin": margin}


def define_policy(
    name: str,
    *,
    on: OnSpec | None = None,
    run: RunSpec,
    register: RegisterSpec,
    canary: CanarySpec | None = None,
    promote: PromoteSpec | None = None,
) -> PolicySpec:
    """A checked policy document, the same as its YAML would give. Without `on` it acts on
    every monitor alert; without `canary` the new version is judged by its gate alone;
    without `promote` it stays the challenger."""
    spec: PolicySpec = {
        "name": name,
        "on": on if on is not None else on_event(),
        "run": run,
        "register": register,
    }
    if canary is not None:
        spec["canary"] = canary
    if promote is not None:
        spec["promote"] = promote
    parse(plain(spec))
    return spec
