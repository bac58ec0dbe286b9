"""Alert rules: `[NAME:] METRIC OP NUMBER [for N windows]`, with hysteresis.

    drift: drift_share > 0.3 for 2 windows
    accuracy < 0.85
    latency: p99_ms > 50 for 3 windows

A rule fires when its condition held in the last N windows in a row, and resolves when
it failed in the last N in a row; in between it stays as it was. A window where the
metric is unknown (no labels yet, no data) counts as neither.
"""

from __future__ import annotations

import dataclasses
import operator
import re
from collections.abc import Callable, Mapping, Sequence

from treadle.errors import InvalidInputError

METRICS = {
    "drift_share": "share of features that drifted",
    "dataset_drift": "1 when the share reached the monitor's threshold, else 0",
    "prediction_drift": "effect size of the prediction's drift",
    "drifted_features": "how many features drifted",
    "rows": "predictions in the window",
    "missing_share": "share of input values missing",
    "out_of_range_share": "share of numeric values outside the training range",
    "accuracy": "share of labelled predictions that were right (classifiers)",
    "f1": "F1 of labelled predictions (binary: class 1; else macro)",
    "auc": "ROC AUC (binary labels and numeric scores)",
    "mae": "mean absolute error (regressors)",
    "rmse": "root mean squared error (regressors)",
    "labelled": "predictions in the window with a label",
    "p50_ms": "median latency",
    "p95_ms": "95th percentile latency",
    "p99_ms": "99th percentile latency",
    "requests_per_s": "request rate",
    "error_rate": "share of requests answered with an error",
}
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
_RULE = re.compile(
    r"^\s*(?:(?!feature:)(?P<name>[A-Za-z][\w.-]{0,63})\s*:\s*)?"
    r"(?P<metric>[A-Za-z_][\w.:-]*)\s*(?P<op>>=|<=|==|!=|>|<)\s*"
    r"(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
    r"(?:\s+for\s+(?P<n>\d+)\s+windows?)?\s*$"
)


@dataclasses.dataclass(frozen=True)
class Rule:
    name: str
    metric: str
    op: str
    threshold: float
    windows: int
    text: str

    def holds(self, value: float) -> bool:
        return _OPS[self.op](value, self.threshold)


def parse(text: str) -> Rule:
    """A rule from its text, or an InvalidInputError saying what is wrong."""
    found = _RULE.match(text)
    if found is None:
        raise InvalidInputError(
            f"rules: {text!r} is not a rule",
            "write NAME: METRIC OP NUMBER [for N windows], e.g. "
            "'drift: drift_share > 0.3 for 2 windows'",
        )
    metric = found["metric"]
    if metric not in METRICS and not metric.startswith("feature:"):
        raise InvalidInputError(
            f"rules: {text!r} names no metric {metric!r}",
            f"metrics: {', '.join(METRICS)}, or feature:COLUMN (its drift effect size)",
        )
    windows = int(found["n"] or 1)
    if not 1 <= windows <= 100:
        raise InvalidInputError(f"rules: {text!r}: the window count must be 1 to 100")
    name = found["name"] or metric.replace(":", "-")
    return Rule(name, metric, found["op"], float(found["value"]), windows, text.strip())


def parse_all(texts: Sequence[str]) -> list[Rule]:
    rules = [parse(t) for t in texts]
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise InvalidInputError("rules: two rules have the same name", "name them: NAME: ...")
    return rules


def verdict(rule: Rule, history: Sequence[Mapping[str, float | None]]) -> bool | None:
    """True when the rule held in the last `windows` windows (newest last), False when it
    failed in all of them, None when they disagree or a value is unknown."""
    recent = history[-rule.windows :]
    if len(recent) < rule.windows:
        return None
    values = [window.get(rule.metric) for window in recent]
    if any(v is None for v in values):
        return None
    outcomes = {rule.holds(float(v)) for v in values if v is not None}
    return outcomes.pop() if len(outcomes) == 1 else None
