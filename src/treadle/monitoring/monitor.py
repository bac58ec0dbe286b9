"""Monitors: a deployment's prediction log, cut into windows, each compared with the
reference profile of the model version that served it.

A window closes by count (every N predictions) or by time (every N seconds); it waits
`label_wait` seconds past its end so that late labels (`POST /feedback`) can join it.
For each window the monitor records drift (per feature, for the prediction, a
dataset-level verdict), live performance where labels arrived, and service health
(rate, latency percentiles and errors by version), then evaluates the alert rules. An
alert that fires becomes a `monitor.alert` event that triggers act on.

Bad data never stops the loop: a window with no rows is recorded as `no_data`, a model
version without a reference profile gives a window without drift (and says so), a
deployment that was deleted puts the monitor in state `error` with the reason.
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from treadle.config import deployment_log
from treadle.errors import InvalidInputError, NotFoundError, TreadleError
from treadle.monitoring import rules as rule_grammar
from treadle.monitoring.health import (
    RequestCounts,
    add_error_rates,
    error_rates,
    health,
    scrape_requests,
)
from treadle.store.records import MonitorRecord, new_id

LAG_SECONDS = 1.5
"""How long after a prediction's timestamp its segment is surely written (the log flushes
every 0.5 s)."""
INPUT = "input."
DEFAULTS: dict[str, Any] = {"label_wait": 0.0}


def predictions_dir(home: Path, project: str, deployment: str) -> Path:
    """Where a project's deployment's model servers log predictions."""
    return deployment_log(home, "predictions", project, deployment)


def feedback_dir(home: Path, project: str, deployment: str) -> Path:
    return deployment_log(home, "feedback", project, deployment)


def new_monitor(
    *,
    project_id: str,
    name: str,
    deployment: str,
    window_kind: str = "rows",
    window_size: int = 1000,
    thresholds: Mapping[str, Any] | None = None,
    rules: Sequence[str] = (),
    user: str,
    now: float | None = None,
) -> MonitorRecord:
    """A checked monitor record that starts with predictions logged from now on."""
    from treadle.monitoring.drift import Thresholds

    if window_kind not in ("rows", "seconds"):
        raise InvalidInputError(f"window_kind: {window_kind!r} is not rows or seconds")
    if not 1 <= window_size <= 10_000_000:
        raise InvalidInputError(f"window_size: {window_size} is not between 1 and 10,000,000")
    given = dict(thresholds or {})
    known = {f.name for f in dataclasses.fields(Thresholds)} | set(DEFAULTS)
    unknown = sorted(set(given) - known)
    if unknown:
        raise InvalidInputError(
            f"thresholds: {unknown[0]!r} is not a threshold", f"known: {', '.join(sorted(known))}"
        )
    words = {"method_numeric", "method_categorical"}
    for key, value in given.items():
        if key in words:
            if not isinstance(value, str):
                raise InvalidInputError(f"thresholds: {key} must be a method name")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInputError(f"thresholds: {key} must be a number, not {value!r}")
        elif not math.isfinite(value) or value < 0:
            raise InvalidInputError(f"thresholds: {key} must be a finite number >= 0")
    drift_given = {k: v for k, v in given.items() if k not in DEFAULTS}
    try:
        Thresholds(**drift_given)
    except TypeError as exc:
        raise InvalidInputError(f"thresholds: {exc}") from None
    except InvalidInputError as exc:
        raise InvalidInputError(f"thresholds: {exc.message}", exc.hint) from None
    rule_grammar.parse_all(list(rules))
    at = time.time() if now is None else now
    return MonitorRecord(
        id=new_id(),
        project_id=project_id,
        name=name,
        deployment=deployment,
        window_kind=window_kind,
        window_size=window_size,
        thresholds=given,
        rules=list(rules),
        state="waiting",
        detail="no predictions logged yet",
        cursor=at,
        created_by=user,
        created_at=at,
    )


# -- reading the logs -------------------------------------------------------------------


def read_since(folder: Path, since: float, until: float) -> Any:
    """Logged predictions with since < ts <= until, in log order, as a pandas frame.
    Segments written before `since` (by the time in their name) are not opened."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    day0 = time.strftime("%Y-%m-%d", time.gmtime(since - 2))
    clock0 = time.strftime("%H%M%S", time.gmtime(since - 2))
    tables = []
    if folder.is_dir():
        for day in sorted(p for p in folder.iterdir() if p.is_dir() and p.name >= day0):
            for path in sorted(day.glob("*.parquet")):
                if path.name.startswith(".") or (day.name == day0 and path.name[:6] < clock0):
                    continue
                table = pq.read_table(path)
                ts = table.column("ts").to_numpy()
                keep = (ts > since) & (ts <= until)
                if keep.any():
                    tables.append(table.filter(pa.array(keep)))
    if not tables:
        return pd.DataFrame(columns=["ts", "request_id", "model", "version", "latency_ms"])
    frame = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    frame = frame.sort_values("ts", kind="stable").reset_index(drop=True)
    # the row of its request each prediction was (labels name them so)
    frame["row"] = frame.groupby("request_id", sort=False).cumcount()
    return frame


def read_feedback(folder: Path) -> Any:
    """Every label under `folder` as a pandas DataFrame (request_id, row, version, label,
    ts), the newest label winning for a (request_id, row)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(p for p in folder.rglob("*.parquet") if not p.name.startswith("."))
    if not files:
        return pd.DataFrame(columns=["ts", "request_id", "row", "version", "label"])
    table = pa.concat_tables([pq.read_table(f) for f in files])
    texts = table.column("label").to_pylist()
    frame = table.drop_columns(["label"]).to_pandas()
    frame["label"] = _labels(texts)
    frame = frame.sort_values("ts").drop_duplicates(["request_id", "row"], keep="last")
    return frame.reset_index(drop=True)


def _labels(texts: list[str]) -> list[Any]:
    """The labels from their JSON texts: all in one parse (a window can hold a hundred
    thousand), one by one only if some text is JSON that orjson refuses (NaN)."""
    import orjson

    try:
        values: list[Any] = orjson.loads("[" + ",".join(texts) + "]")
    except orjson.JSONDecodeError:
        return [json.loads(text) for text in texts]
    return values if len(values) == len(texts) else [json.loads(text) for text in texts]


# -- one window's statistics -------------------------------------------------------------


def _port(deployment: Any) -> int | None:
    """Where the deployment's model server listens, when `treadle up` runs it."""
    port = (deployment.spec or {}).get("port")
    return int(port) if port else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def performance(predictions: Sequence[Any], labels: Sequence[Any]) -> dict[str, Any]:
    """Classifier or regressor metrics of labelled predictions (vectorised: a window can
    hold a million)."""
    import numpy as np

    n = len(labels)
    if n == 0:
        return {"labelled": 0}
    zero_one = {0, 1}  # True and False are 1 and 0 here
    seen_labels, seen_predictions = set(labels), set(predictions)
    numeric = all(_is_number(p) for p in seen_predictions)
    # a regressor predicts floats (whole ones too); a classifier ints, bools or strings
    floats = numeric and any(isinstance(p, float) for p in seen_predictions)
    scores = floats and all(0.0 <= float(p) <= 1.0 for p in seen_predictions)
    zero_one_labels = (
        all(_is_number(v) or isinstance(v, bool) for v in seen_labels)
        and {float(v) for v in seen_labels} <= zero_one
    )
    binary = zero_one_labels and (
        scores
        or (
            all(_is_number(p) or isinstance(p, bool) for p in seen_predictions)
            and {float(p) for p in seen_predictions} <= zero_one
        )
    )
    out: dict[str, Any] = {"labelled": n}
    if floats and not (binary and scores):  # a regressor
        p = np.asarray(predictions, dtype=float)
        y = np.asarray(labels, dtype=float)
        out["mae"] = float(np.mean(np.abs(p - y)))
        out["rmse"] = float(math.sqrt(np.mean((p - y) ** 2)))
        return out
    if floats:  # scores for binary labels
        scored = np.asarray(predictions, dtype=float)
        actual = np.asarray(labels, dtype=float) > 0.5
        out["auc"] = _auc(scored, actual)
        predicted = scored >= 0.5
    elif binary:
        predicted = np.asarray(predictions, dtype=float) == 1.0
        actual = np.asarray(labels, dtype=float) == 1.0
    else:
        predicted = np.asarray([json.dumps(v) for v in predictions], dtype=object)
        actual = np.asarray([json.dumps(v) for v in labels], dtype=object)
    out["accuracy"] = float(np.mean(predicted == actual))
    out["f1"] = _f1(predicted, actual, binary)
    return out


def _f1(predicted: Any, actual: Any, binary: bool) -> float:
    import numpy as np

    classes = [True] if binary else sorted(set(actual.tolist()) | set(predicted.tolist()))
    scores = []
    for c in classes:
        p, a = predicted == c, actual == c
        tp = int(np.sum(p & a))
        fp = int(np.sum(p & ~a))
        fn = int(np.sum(~p & a))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0)
    return float(sum(scores) / len(scores))


def _auc(scores: Any, positive: Any) -> float | None:
    import numpy as np

    pos, neg = int(positive.sum()), int((~positive).sum())
    if pos == 0 or neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    # ties share their average rank
    sorted_scores = scores[order]
    start = 0
    for i in range(1, len(scores) + 1):
        if i == len(scores) or sorted_scores[i] != sorted_scores[start]:
            ranks[order[start:i]] = (start + 1 + i) / 2
            start = i
    return float((ranks[positive].sum() - pos * (pos + 1) / 2) / (pos * neg))


@dataclasses.dataclass
class Reference:
    version: int
    profile: dict[str, Any] | None


class Monitoring:
    """Closes the windows that are due for every monitor, and raises their alerts."""

    def __init__(
        self,
        store: Any,
        clock: Callable[[], float] = time.time,
        announce: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.announce = announce
        self._profiles: dict[tuple[str, str, int], dict[str, Any] | None] = {}
        # the last request counts each monitor scraped, and from which port
        self._scraped: dict[str, tuple[int, RequestCounts]] = {}
        self._projects: dict[str, str] = {}

    # -- the loop ---------------------------------------------------------------------

    def tick(self) -> int:
        """Close every window that is due; returns how many were recorded."""
        recorded = 0
        for monitor in self.store.monitoring.list_monitors():
            try:
                recorded += self.advance(monitor)
            except TreadleError as exc:
                self.store.monitoring.set_state(monitor.id, "error", exc.message)
            except Exception as exc:  # the loop outlives one monitor's trouble
                self.store.monitoring.set_state(monitor.id, "error", f"{type(exc).__name__}: {exc}")
                self.announce(f"monitor {monitor.name}: {type(exc).__name__}: {exc}")
        return recorded

    def run_forever(self, stop: threading.Event, every: float = 1.0) -> None:
        while not stop.wait(every):
            try:
                self.tick()
            except Exception as exc:
                self.announce(f"monitoring: {type(exc).__name__}: {exc}")

    def advance(self, monitor: MonitorRecord) -> int:
        deployment = self._deployment(monitor)
        port, known = _port(deployment), self._scraped.get(monitor.id)
        if port and (known is None or known[0] != port):
            # a baseline, so that the first window has an error rate of its own
            counts = scrape_requests(port)
            if counts is not None:
                self._scraped[monitor.id] = (port, counts)
        home = self.store.settings.home
        wait = float(monitor.thresholds.get("label_wait", 0.0))
        ready = self.clock() - LAG_SECONDS - wait
        if ready <= monitor.cursor:
            return 0
        project = self._project_name(monitor.project_id)
        frame = read_since(
            predictions_dir(home, project, monitor.deployment), monitor.cursor, ready
        )
        windows: list[tuple[float, float, Any]] = []
        if monitor.window_kind == "rows":
            size = monitor.window_size
            start = monitor.cursor
            ts = frame["ts"].to_numpy() if len(frame) else []
            first = 0
            while len(frame) - first >= size:
                last = first + size  # rows of the same instant (one request) stay together
                while last < len(frame) and ts[last] == ts[last - 1]:
                    last += 1
                part = frame.iloc[first:last]
                end = float(ts[last - 1])
                windows.append((start, end, part))
                start, first = end, last
        else:
            start = monitor.cursor
            while start + monitor.window_size <= ready:
                end = start + monitor.window_size
                part = frame[(frame["ts"] > start) & (frame["ts"] <= end)]
                windows.append((start, end, part))
                start = end
        recorded = 0
        for start, end, part in windows:
            if self._close(monitor, deployment, start, end, part):
                recorded += 1
            monitor = self.store.monitoring.get_monitor_by_id(monitor.id)
        if not windows and monitor.state == "waiting":
            return 0
        return recorded

    def _deployment(self, monitor: MonitorRecord) -> Any:
        try:
            return self.store.deployments.get_deployment(monitor.project_id, monitor.deployment)
        except NotFoundError:
            raise NotFoundError(
                f"deployment {monitor.deployment!r} no longer exists",
                "delete the monitor, or deploy it again",
            ) from None

    # -- one window ------------------------------------------------------------------------

    def _close(
        self, monitor: MonitorRecord, deployment: Any, start: float, end: float, part: Any
    ) -> bool:
        stats = self.window_stats(monitor, part, start, end)
        port = _port(deployment)
        if port:
            add_error_rates(stats, self._error_rates(monitor.id, port))
        status = "no_data" if stats["rows"] == 0 else ("drift" if stats["drift_verdict"] else "ok")
        window = self.store.monitoring.add_window(
            monitor.id,
            start_ts=start,
            end_ts=end,
            rows=stats["rows"],
            status=status,
            stats=stats,
            cursor=end,
            at=self.clock(),
        )
        if window is None:
            return False  # another loop closed it
        self._alerts(monitor, window.seq, stats)
        return True

    def window_stats(self, monitor: MonitorRecord, part: Any, start: float, end: float) -> dict:
        """Drift, performance and health of one window of logged predictions."""
        from treadle.monitoring.drift import Thresholds, compare

        rows = len(part)
        stats: dict[str, Any] = {"rows": rows, "start": start, "end": end}
        stats["health"] = health(part, end - start) if rows else {"requests": 0}
        metrics: dict[str, float | None] = {"rows": float(rows)}
        for key in ("p50_ms", "p95_ms", "p99_ms", "requests_per_s"):
            metrics[key] = stats["health"].get(key)
        stats["drift"] = None
        stats["drift_verdict"] = False
        if rows:
            counts = part["version"].value_counts()
            version = int(counts.index[0])
            model = str(part["model"].iloc[0])
            stats["versions"] = {str(int(v)): int(c) for v, c in counts.items()}
            stats["reference"] = {"model": model, "version": version}
            profile = self._profile(monitor.project_id, model, version)
            inputs = part[[c for c in part.columns if c.startswith(INPUT)]]
            inputs = inputs.rename(columns=lambda c: c[len(INPUT) :])
            drift_thresholds = {k: v for k, v in monitor.thresholds.items() if k not in DEFAULTS}
            if profile is None:
                stats["drift_note"] = (
                    f"{model} version {version} has no reference profile: register it with "
                    "training_data= to compare windows with it"
                )
            else:
                report = compare(
                    profile,
                    inputs,
                    part["prediction"].to_numpy() if "prediction" in part else None,
                    Thresholds(**drift_thresholds),
                )
                stats["drift"] = report.to_json()
                stats["drift_verdict"] = bool(report.dataset_drift)
                stats["share_threshold"] = Thresholds(**drift_thresholds).share
                metrics["drift_share"] = report.drift_share
                metrics["dataset_drift"] = 1.0 if report.dataset_drift else 0.0
                metrics["drifted_features"] = float(len(report.drifted))
                if report.prediction is not None:
                    metrics["prediction_drift"] = report.prediction.effect
                total = max(rows * max(len(report.features), 1), 1)
                metrics["missing_share"] = sum(f.missing for f in report.features) / total
                metrics["out_of_range_share"] = sum(f.out_of_range for f in report.features) / total
                for feature in report.features:
                    metrics[f"feature:{feature.name}"] = feature.effect
            stats["performance"] = self._performance(monitor, part)
            for key in ("accuracy", "f1", "auc", "mae", "rmse", "labelled"):
                value = stats["performance"].get(key)
                metrics[key] = None if value is None else float(value)
        stats["metrics"] = metrics
        return stats

    def _performance(self, monitor: MonitorRecord, part: Any) -> dict[str, Any]:
        if "prediction" not in part:
            return {"labelled": 0}
        project = self._project_name(monitor.project_id)
        labels = read_feedback(feedback_dir(self.store.settings.home, project, monitor.deployment))
        if not len(labels):
            return {"labelled": 0}
        joined = part[["request_id", "row", "prediction", "version"]].merge(
            labels[["request_id", "row", "label"]], on=["request_id", "row"], how="inner"
        )
        out = performance(list(joined["prediction"]), list(joined["label"]))
        by_version = {}
        for version, group in joined.groupby("version"):
            by_version[str(int(version))] = performance(
                list(group["prediction"]), list(group["label"])
            )
        out["by_version"] = by_version
        return out

    def _project_name(self, project_id: str) -> str:
        if project_id not in self._projects:
            self._projects = {p.id: p.name for p in self.store.projects.list_projects()}
        return self._projects[project_id]

    def _profile(self, project_id: str, model: str, version: int) -> dict[str, Any] | None:
        key = (project_id, model, version)
        if key not in self._profiles:
            from treadle.models.format import read_manifest

            registered = self.store.models.get_model(project_id, model)
            record = self.store.models.get_version(registered.id, version)
            self._profiles[key] = read_manifest(record.manifest_sha, self.store.objects).profile
        return self._profiles[key]

    def _error_rates(self, monitor_id: str, port: int) -> dict[str, Any] | None:
        """Error rates of the requests the server counted since this monitor's last
        scrape: those of the window closing now (the log's lag and `label_wait` later).
        When the server does not answer, the last counts stay, so the next window's
        rates cover both windows."""
        counts = scrape_requests(port)
        if counts is None:
            return None
        before = self._scraped.get(monitor_id)
        self._scraped[monitor_id] = (port, counts)
        if before is None or before[0] != port:
            return None
        return error_rates(before[1], counts)

    # -- alerts ----------------------------------------------------------------------------

    def _alerts(self, monitor: MonitorRecord, seq: int, stats: dict[str, Any]) -> None:
        parsed = rule_grammar.parse_all(monitor.rules)
        if not parsed:
            self._state(monitor, stats, [])
            return
        longest = max(r.windows for r in parsed)
        history = [
            w.stats.get("metrics", {})
            for w in reversed(self.store.monitoring.list_windows(monitor.id, limit=longest))
        ]
        open_alerts = {
            a.name: a
            for a in self.store.monitoring.list_alerts(
                monitor.project_id, monitor.id, state="firing"
            )
        }
        firing = []
        now = self.clock()
        for rule in parsed:
            held = rule_grammar.verdict(rule, history)
            current = open_alerts.get(rule.name)
            if held is True and current is None:
                value = history[-1].get(rule.metric)
                alert = self.store.monitoring.open_alert(
                    monitor, rule.name, rule.text, value, seq, now
                )
                payload = {
                    "monitor": monitor.name,
                    "deployment": monitor.deployment,
                    "alert": rule.name,
                    "rule": rule.text,
                    "metric": rule.metric,
                    "value": value,
                    "window": {
                        "seq": seq,
                        "start": stats["start"],
                        "end": stats["end"],
                        "rows": stats["rows"],
                    },
                    "versions": stats.get("versions", {}),
                    "drifted": (stats.get("drift") or {}).get("drifted", []),
                }
                event, _ = self.store.automation.record_event(
                    monitor.project_id, "monitor.alert", alert.id, payload, now
                )
                self.store.monitoring.link_event(alert.id, event.id)
                self.announce(f"monitor {monitor.name}: alert {rule.name} fired ({rule.text})")
                firing.append(rule.name)
            elif held is False and current is not None:
                self.store.monitoring.resolve_alert(current.id, now)
            elif current is not None:
                firing.append(rule.name)
        self._state(monitor, stats, firing)

    def _state(self, monitor: MonitorRecord, stats: dict[str, Any], firing: list[str]) -> None:
        if firing:
            state, detail = "alerting", "firing: " + ", ".join(firing)
        elif stats["rows"] == 0:
            state, detail = "no_data", "the last window had no predictions"
        else:
            state, detail = "ok", f"last window: {stats['rows']} predictions"
            if stats.get("drift_note"):
                detail += f"; {stats['drift_note']}"
        self.store.monitoring.set_state(monitor.id, state, detail)
