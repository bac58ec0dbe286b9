"""Monitoring: the alert-rule grammar and its hysteresis, live performance of labelled
predictions, reading the prediction log, and monitors closing windows over a real store
with an injected clock — by count and by time, drift on shifted inputs, accuracy from
labels that arrive late, alerts that fire and resolve with one event each, and the
corners (a version without a profile, a deleted deployment, bad settings).

Predictions are written by the model server's own `PredictionLog` and labels by its
`FeedbackLog`, into `$HOME/predictions/<deployment>` and `$HOME/feedback/<deployment>`,
so the monitor reads exactly what a server writes. The rows carry the real time; the
clock handed to `Monitoring` runs just past them, so nothing waits.
"""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from treadle.engine.loader import load_file
from treadle.errors import InvalidInputError
from treadle.models.format import read_manifest
from treadle.monitoring import rules
from treadle.monitoring.monitor import (
    LAG_SECONDS,
    Monitoring,
    feedback_dir,
    new_monitor,
    performance,
    predictions_dir,
    read_feedback,
    read_since,
)
from treadle.registry import register_model
from treadle.registry.refs import ModelRef
from treadle.serving.deployments import deploy, make_spec
from treadle.serving.feedback import FeedbackLog
from treadle.serving.predlog import PredictionLog
from treadle.serving.server import prediction_folder
from treadle.store import Store, open_store
from treadle.store.records import AlertRecord, EventRecord, MonitorRecord, MonitorWindowRecord

RESOURCES = Path(__file__).resolve().parents[1] / "resources"
world = load_file(RESOURCES / "loop_pipeline.py")
FEATURES: list[str] = world.FEATURES
MODEL: str = world.MODEL
DRIFT_RULE = "drift: drift_share > 0.3 for 2 windows"


def wait_until(probe: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not probe():
        assert time.monotonic() < deadline, "the log writer did not flush in time"
        time.sleep(0.01)


# -- the rule grammar ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("drift: drift_share > 0.3 for 2 windows", ("drift", "drift_share", ">", 0.3, 2)),
        ("accuracy < 0.85", ("accuracy", "accuracy", "<", 0.85, 1)),
        ("latency: p99_ms > 50 for 3 windows", ("latency", "p99_ms", ">", 50.0, 3)),
        ("empty: rows == 0 for 1 window", ("empty", "rows", "==", 0.0, 1)),
        ("  mae <= 1e-3  ", ("mae", "mae", "<=", 0.001, 1)),
        ("down: auc != -.5", ("down", "auc", "!=", -0.5, 1)),
        ("shift: feature:f0 >= 0.2", ("shift", "feature:f0", ">=", 0.2, 1)),
    ],
)
def test_rules_parse_name_metric_op_threshold_and_windows(
    text: str, expected: tuple[str, str, str, float, int]
) -> None:
    rule = rules.parse(text)
    assert (rule.name, rule.metric, rule.op, rule.threshold, rule.windows) == expected
    assert rule.text == text.strip()


def test_an_unnamed_feature_rule_is_named_after_its_metric() -> None:
    rule = rules.parse("feature:f0 > 0.2")
    assert (rule.name, rule.metric) == ("feature-f0", "feature:f0")


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("", "is not a rule"),
        ("drift_share", "is not a rule"),
        ("drift_share > high", "is not a rule"),
        ("drift_share >> 0.3", "is not a rule"),
        ("drift_share ≥ 0.3", "is not a rule"),
        ("drift_share > 0.3 for two windows", "is not a rule"),
        ("drift_share > 0.3 for 2 hours", "is not a rule"),
        ("bogus > 1", "names no metric 'bogus'"),
        ("drift: drift_share > 0.3 for 0 windows", "window count"),
        ("drift: drift_share > 0.3 for 101 windows", "window count"),
    ],
)
def test_rules_refuse_bad_text_naming_rules(text: str, said: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        rules.parse(text)
    assert caught.value.message.startswith("rules:")
    assert said in caught.value.message


def test_rules_refuse_two_rules_of_one_name() -> None:
    with pytest.raises(InvalidInputError, match="same name"):
        rules.parse_all(["a: rows > 1", "a: rows < 5"])
    assert [r.name for r in rules.parse_all(["a: rows > 1", "b: rows < 5"])] == ["a", "b"]


def test_verdict_holds_fails_or_abstains_over_the_last_n_windows() -> None:
    rule = rules.parse("d: drift_share > 0.3 for 2 windows")

    def verdict(*values: float | None) -> bool | None:
        return rules.verdict(rule, [{"drift_share": v} for v in values])

    assert rules.verdict(rule, []) is None
    assert verdict(0.9) is None  # fewer windows than the rule needs
    assert verdict(0.9, 0.5) is True
    assert verdict(0.1, 0.2) is False
    assert verdict(0.9, 0.1) is None  # they disagree: the alert stays as it was
    assert verdict(0.1, 0.9) is None
    assert verdict(0.1, 0.9, 0.9) is True  # only the newest two count
    assert verdict(0.9, 0.9, 0.1) is None
    assert verdict(0.9, None) is None  # a window without the metric counts as neither
    assert verdict(None, 0.9) is None
    assert rules.verdict(rule, [{"drift_share": 0.9}, {"rows": 0.0}]) is None
    assert verdict(0.3, 0.3) is False  # the comparison is strict


# -- live performance ---------------------------------------------------------------------


def test_performance_of_binary_classes() -> None:
    predicted = [1, 1, 0, 0, 1]
    actual = [1, 0, 0, 1, 1]
    # tp 2, fp 1, fn 1: F1 = 2*2 / (2*2 + 1 + 1)
    assert performance(predicted, actual) == {
        "labelled": 5,
        "accuracy": pytest.approx(3 / 5),
        "f1": pytest.approx(4 / 6),
    }
    # booleans and 0/1 mean the same
    as_bools = performance([bool(p) for p in predicted], [bool(a) for a in actual])
    assert as_bools["accuracy"] == pytest.approx(3 / 5)
    assert as_bools["f1"] == pytest.approx(4 / 6)
    assert performance([0, 0], [0, 0])["f1"] == 1.0  # no positive anywhere: nothing missed


def test_performance_of_several_classes_is_macro_f1() -> None:
    predicted = ["a", "b", "c", "a"]
    actual = ["a", "b", "b", "c"]
    # a: tp1 fp1 fn0 -> 2/3; b: tp1 fp0 fn1 -> 2/3; c: tp0 fp1 fn1 -> 0
    out = performance(predicted, actual)
    assert out["labelled"] == 4
    assert out["accuracy"] == pytest.approx(2 / 4)
    assert out["f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert "auc" not in out and "mae" not in out
    numbers = performance([0, 1, 2, 2], [0, 1, 2, 1])
    assert numbers["accuracy"] == pytest.approx(3 / 4)


def test_a_third_class_predicted_is_never_right_for_a_binary_looking_window() -> None:
    assert performance([2, 2, 1], [0, 0, 1])["accuracy"] == pytest.approx(1 / 3)


def _hand_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """The share of (positive, negative) pairs ordered rightly, ties counting half."""
    pairs = [
        1.0 if p > n else 0.5 if p == n else 0.0
        for p, yp in zip(scores, labels, strict=True)
        if yp == 1
        for n, yn in zip(scores, labels, strict=True)
        if yn == 0
    ]
    return sum(pairs) / len(pairs)


@pytest.mark.parametrize(
    ("scores", "labels"),
    [
        ([0.2, 0.8, 0.6, 0.4], [0, 1, 0, 1]),
        ([0.5, 0.5, 0.9, 0.1], [1, 0, 1, 0]),  # a tie across the classes
        ([0.1, 0.35, 0.35, 0.35, 0.8, 0.9, 0.05], [0, 1, 0, 1, 1, 0, 0]),
    ],
)
def test_performance_of_scores_gives_auc_as_by_hand(scores: list[float], labels: list[int]) -> None:
    out = performance(scores, labels)
    assert out["auc"] == pytest.approx(_hand_auc(scores, labels))
    hits = sum(int(s >= 0.5) == y for s, y in zip(scores, labels, strict=True))
    assert out["accuracy"] == pytest.approx(hits / len(labels))
    assert performance([0.5, 0.5, 0.9, 0.1], [1, 0, 1, 0])["auc"] == pytest.approx(0.875)


def test_auc_is_unknown_when_one_class_is_missing() -> None:
    assert performance([0.2, 0.7, 0.9], [1, 1, 1])["auc"] is None


def test_performance_of_a_regressor_is_mae_and_rmse() -> None:
    out = performance([1.5, 2.0, 3.5], [1.0, 2.5, 5.0])
    assert out == {
        "labelled": 3,
        "mae": pytest.approx((0.5 + 0.5 + 1.5) / 3),
        "rmse": pytest.approx(math.sqrt((0.25 + 0.25 + 2.25) / 3)),
    }
    assert performance([], []) == {"labelled": 0}


def test_whole_number_predictions_of_a_regressor_still_give_mae() -> None:
    assert performance([3.0, 5.0], [2.5, 5.5])["mae"] == pytest.approx(0.5)


# -- reading the logs ---------------------------------------------------------------------


def _append(
    log: PredictionLog, rows: list[list[float]], *, version: int = 1, latency: float = 1.0
) -> str:
    request_id = uuid.uuid4().hex
    outputs = [int(r[0] + r[1] > 0) for r in rows]
    log.append(request_id, MODEL, version, latency, FEATURES, rows, outputs, world.DTYPES)
    return request_id


def test_read_since_filters_by_time_and_numbers_rows_per_request(tmp_path: Path) -> None:
    folder = tmp_path / "predictions" / "api"
    # an old segment the reader must not even open: it is not Parquet
    (folder / "2020-01-01").mkdir(parents=True)
    (folder / "2020-01-01" / "000000-1-000000.parquet").write_text("not parquet")
    log = PredictionLog(folder, flush_seconds=0.02)
    try:
        first = _append(log, [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [-9.0, 0, 0, 0]])
        second = _append(log, [[0.5, 0.5, 0.5, 0.5]], version=2)
        wait_until(lambda: log.written == 4)
        between = time.time()
        time.sleep(0.01)
        third = _append(log, [[2.0, 2.0, 2.0, 2.0], [3.0, 3.0, 3.0, 3.0]], latency=7.0)
        wait_until(lambda: log.written == 6)
    finally:
        log.close()
    start = between - 60

    everything = read_since(folder, start, time.time() + 1)
    assert list(everything["request_id"]) == [first] * 3 + [second] + [third] * 2
    assert list(everything["row"]) == [0, 1, 2, 0, 0, 1]
    assert list(everything["version"]) == [1, 1, 1, 2, 1, 1]
    assert list(everything["input.f0"]) == [1.0, 5.0, -9.0, 0.5, 2.0, 3.0]
    assert list(everything["prediction"]) == [1, 1, 0, 1, 1, 1]
    assert list(everything["latency_ms"])[-1] == 7.0
    assert list(everything["ts"]) == sorted(everything["ts"])

    before = read_since(folder, start, between)
    assert list(before["request_id"]) == [first] * 3 + [second]
    after = read_since(folder, between, time.time() + 1)
    assert list(after["request_id"]) == [third, third]
    assert list(after["row"]) == [0, 1]
    # since < ts <= until: a row stamped exactly at `since` belongs to the window before
    last = float(everything["ts"].iloc[3])
    assert list(read_since(folder, last, between)["request_id"]) == []
    assert list(read_since(folder, start, last)["request_id"])[-1] == second

    assert len(read_since(tmp_path / "nowhere", 0, time.time())) == 0


def test_read_feedback_keeps_the_newest_label_of_a_row(tmp_path: Path) -> None:
    folder = tmp_path / "feedback" / "api"
    assert len(read_feedback(folder)) == 0
    log = FeedbackLog(folder, flush_seconds=0.02)
    try:
        log.append("r1", 0, 1, 0)
        log.append("r1", 1, 1, "cat")
        wait_until(lambda: log.written == 2)
        log.append("r1", 0, 1, 1)  # a correction
        wait_until(lambda: log.written == 3)
    finally:
        log.close()
    labels = read_feedback(folder)
    by_row = {(r.request_id, r.row): r.label for r in labels.itertuples()}
    assert by_row == {("r1", 0): 1, ("r1", 1): "cat"}


# -- monitors over a real store -----------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclasses.dataclass
class Sent:
    request_id: str
    frame: pd.DataFrame
    predictions: list[int]


@dataclasses.dataclass
class Served:
    """A deployment's logs, written as its model server writes them."""

    name: str
    model: str
    version: int
    predictor: Any
    predictions: PredictionLog
    feedback: FeedbackLog
    rows_sent: int = 0
    labels_sent: int = 0

    def send(self, frame: pd.DataFrame, per_request: int = 1, latency: float = 2.0) -> list[Sent]:
        """Log the model's answers to `frame`, `per_request` rows to a request."""
        answers = [int(p) for p in self.predictor.predict(frame[FEATURES])]
        values = frame[FEATURES].to_numpy().tolist()
        sent = []
        for start in range(0, len(frame), per_request):
            end = start + per_request
            request_id = uuid.uuid4().hex
            self.predictions.append(
                request_id,
                self.model,
                self.version,
                latency,
                FEATURES,
                values[start:end],
                answers[start:end],
                world.DTYPES,
            )
            sent.append(Sent(request_id, frame.iloc[start:end], answers[start:end]))
        self.rows_sent += len(frame)
        wait_until(lambda: self.predictions.written >= self.rows_sent)
        return sent

    def label(self, sent: Sequence[Sent]) -> None:
        for s in sent:
            for row, label in enumerate(s.frame[world.LABEL]):
                self.feedback.append(s.request_id, row, self.version, int(label))
                self.labels_sent += 1
        wait_until(lambda: self.feedback.written >= self.labels_sent)

    def close(self) -> None:
        self.predictions.close()
        self.feedback.close()


def hits(sent: Sequence[Sent]) -> float:
    right = [p == y for s in sent for p, y in zip(s.predictions, s.frame[world.LABEL], strict=True)]
    return sum(right) / len(right)


class Lab:
    """A store with a registered model (with a reference profile), deployments whose
    logs the test writes, and a monitoring loop on an injected clock."""

    def __init__(self, store: Store) -> None:
        self.store = store
        user = store.settings.user
        self.project_id = store.projects.ensure_project(store.settings.project, user).id
        self.clock = Clock()
        self.monitoring = Monitoring(store, self.clock)
        train = world.world(1000, seed=0)
        self.model = world.fit(train)
        features = train[FEATURES]
        self.version = register_model(
            self.model, MODEL, input_example=features.head(5), training_data=features, store=store
        ).version
        self.served: list[Served] = []

    def deployment(self, name: str, model: str = MODEL, version: int | None = None) -> Served:
        version = version or self.version
        deploy(self.store, self.project_id, name, make_spec(ModelRef(model, version=version)))
        home = self.store.settings.home
        served = Served(
            name,
            model,
            version,
            self.model,
            PredictionLog(predictions_dir(home, "default", name), flush_seconds=0.02),
            FeedbackLog(feedback_dir(home, "default", name), flush_seconds=0.02),
        )
        self.served.append(served)
        return served

    def monitor(self, name: str, deployment: str, **options: Any) -> MonitorRecord:
        record = new_monitor(
            project_id=self.project_id,
            name=name,
            deployment=deployment,
            user="me",
            now=options.pop("now", self.clock()),
            **options,
        )
        return self.store.monitoring.create_monitor(record)

    def tick(self, wait: float = 0.0) -> int:
        """A monitoring pass once everything logged so far is surely written (and
        `wait` more seconds have passed)."""
        self.clock.now = time.time() + LAG_SECONDS + 0.01 + wait
        return self.monitoring.tick()

    def get(self, name: str) -> MonitorRecord:
        return self.store.monitoring.get_monitor(self.project_id, name)

    def windows(self, name: str) -> list[MonitorWindowRecord]:
        """Oldest first."""
        return list(reversed(self.store.monitoring.list_windows(self.get(name).id, 1000)))

    def alerts(self, name: str) -> list[AlertRecord]:
        return self.store.monitoring.list_alerts(self.project_id, self.get(name).id)

    def events(self) -> list[EventRecord]:
        return self.store.automation.list_events(self.project_id, "monitor.alert", 1000)

    def close(self) -> None:
        for served in self.served:
            served.close()


@pytest.fixture
def lab(store: Store) -> Iterator[Lab]:
    made = Lab(store)
    yield made
    made.close()


def test_windows_by_count_measure_drift_accuracy_and_latency(lab: Lab) -> None:
    api = lab.deployment("api")
    lab.monitor("watch", "api", window_size=100)
    assert lab.get("watch").state == "waiting"
    assert lab.tick() == 0

    calm = api.send(world.world(200, seed=1))
    api.label(calm[:150])  # the last 50 predictions never get a label
    assert lab.tick() == 2
    first, second = lab.windows("watch")
    assert (first.seq, first.rows, first.status) == (1, 100, "ok")
    assert first.end_ts == second.start_ts
    m = first.stats["metrics"]
    assert m["rows"] == 100 and m["drift_share"] < 0.3 and m["dataset_drift"] == 0.0
    assert m["accuracy"] == pytest.approx(hits(calm[:100]))
    assert m["labelled"] == 100
    assert second.stats["metrics"]["labelled"] == 50
    assert second.stats["metrics"]["accuracy"] == pytest.approx(hits(calm[100:150]))
    assert first.stats["versions"] == {"1": 100}
    assert first.stats["performance"]["by_version"]["1"]["labelled"] == 100
    health = first.stats["health"]
    assert health["requests"] == 100 and health["p99_ms"] == pytest.approx(2.0)
    assert {f["name"] for f in first.stats["drift"]["features"]} == set(FEATURES)
    assert lab.get("watch").state == "ok"
    assert lab.get("watch").detail == "last window: 100 predictions"

    shifted = api.send(world.world(100, seed=2, shift=1.5))
    api.label(shifted)
    api.send(world.world(40, seed=3))  # not a full window yet: it waits
    assert lab.tick() == 1
    third = lab.windows("watch")[-1]
    assert third.status == "drift"
    assert third.stats["drift"]["drifted"] == FEATURES
    assert third.stats["metrics"]["drift_share"] == 1.0
    assert third.stats["metrics"]["accuracy"] == pytest.approx(hits(shifted))
    assert third.stats["metrics"]["accuracy"] < m["accuracy"] - 0.2
    assert lab.tick() == 0


def test_a_window_waits_label_wait_for_late_labels(lab: Lab) -> None:
    api = lab.deployment("api")
    lab.monitor("watch", "api", window_size=50, thresholds={"label_wait": 30})
    sent = api.send(world.world(50, seed=1))
    assert lab.tick() == 0  # its labels may still come
    api.label(sent)
    assert lab.tick(wait=30) == 1
    (window,) = lab.windows("watch")
    assert window.stats["metrics"]["labelled"] == 50
    assert window.stats["metrics"]["accuracy"] == pytest.approx(hits(sent))


def test_windows_by_time_and_a_window_without_rows_is_no_data(lab: Lab) -> None:
    api = lab.deployment("api")
    t0 = time.time()
    lab.monitor("clock", "api", window_kind="seconds", window_size=10, now=t0 - 25)
    sent = api.send(world.world(30, seed=1))
    assert time.time() < t0 + 5, "writing 30 predictions took 5 s"

    lab.clock.now = t0 + 5 + LAG_SECONDS + 0.001
    assert lab.monitoring.tick() == 3
    windows = lab.windows("clock")
    assert [(w.start_ts - t0, w.end_ts - t0) for w in windows] == [
        pytest.approx((-25, -15)),
        pytest.approx((-15, -5)),
        pytest.approx((-5, 5)),
    ]
    assert [w.status for w in windows] == ["no_data", "no_data", "ok"]
    assert [w.rows for w in windows] == [0, 0, 30]
    assert windows[0].stats["metrics"]["rows"] == 0.0
    assert windows[2].stats["health"]["requests"] == len(sent)
    assert lab.get("clock").state == "ok"

    lab.clock.now = t0 + 15 + LAG_SECONDS + 0.001
    assert lab.monitoring.tick() == 1
    assert lab.windows("clock")[-1].status == "no_data"
    assert lab.get("clock").state == "no_data"
    assert lab.get("clock").detail == "the last window had no predictions"


def test_an_alert_fires_after_n_windows_resolves_after_n_clean_ones_with_one_event(
    lab: Lab,
) -> None:
    api = lab.deployment("api")
    lab.monitor("watch", "api", window_size=60, rules=[DRIFT_RULE])
    seeds = iter(range(10, 100))

    def window(shifted: bool) -> str:
        api.send(world.world(60, seed=next(seeds), shift=1.5 if shifted else 0.0))
        assert lab.tick() == 1
        return lab.get("watch").state

    assert window(shifted=False) == "ok"
    assert window(shifted=True) == "ok"  # one drifted window is not two
    assert lab.alerts("watch") == [] and lab.events() == []

    assert window(shifted=True) == "alerting"
    (alert,) = lab.alerts("watch")
    (event,) = lab.events()
    assert (alert.name, alert.state, alert.fired_seq, alert.value) == ("drift", "firing", 3, 1.0)
    assert alert.rule == DRIFT_RULE and alert.event_id == event.id
    assert lab.get("watch").detail == "firing: drift"
    third = lab.windows("watch")[2]
    assert event.payload["monitor"] == "watch" and event.payload["deployment"] == "api"
    assert (event.payload["alert"], event.payload["metric"]) == ("drift", "drift_share")
    assert event.payload["window"] == {
        "seq": 3,
        "start": third.start_ts,
        "end": third.end_ts,
        "rows": 60,
    }
    assert event.payload["drifted"] == FEATURES and event.payload["versions"] == {"1": 60}

    assert window(shifted=True) == "alerting"  # still firing: no second alert or event
    assert window(shifted=False) == "alerting"  # one clean window is not two
    assert len(lab.alerts("watch")) == 1 and len(lab.events()) == 1

    assert window(shifted=False) == "ok"
    (resolved,) = lab.alerts("watch")
    assert resolved.state == "resolved" and resolved.resolved_at is not None
    assert len(lab.events()) == 1

    window(shifted=True)
    assert window(shifted=True) == "alerting"  # fires again: a new alert, a new event
    assert [a.state for a in lab.alerts("watch")] == ["firing", "resolved"]
    assert len(lab.events()) == 2


def test_a_version_without_a_profile_gives_windows_with_a_note(lab: Lab) -> None:
    bare = register_model(lab.model, "bare-model", store=lab.store)  # no example, no profile
    api = lab.deployment("bare", model="bare-model", version=bare.version)
    lab.monitor("watch", "bare", window_size=30, rules=[DRIFT_RULE])
    sent = api.send(world.world(30, seed=1))
    api.label(sent)
    assert lab.tick() == 1
    (window,) = lab.windows("watch")
    assert window.status == "ok" and window.stats["drift"] is None
    assert "bare-model version 1 has no reference profile" in window.stats["drift_note"]
    assert "training_data=" in window.stats["drift_note"]
    assert window.stats["metrics"]["accuracy"] == pytest.approx(hits(sent))
    assert "drift_share" not in window.stats["metrics"]
    monitor = lab.get("watch")
    assert monitor.state == "ok" and "no reference profile" in monitor.detail


def test_a_deleted_deployment_is_an_error_and_other_monitors_keep_working(lab: Lab) -> None:
    api, other = lab.deployment("api"), lab.deployment("other")
    lab.monitor("watch-api", "api", window_size=20)
    lab.monitor("watch-other", "other", window_size=20)
    api.send(world.world(20, seed=1))
    other.send(world.world(20, seed=2))
    gone = lab.store.deployments.get_deployment(lab.project_id, "other")
    with lab.store.db.write() as conn:  # there is no API to delete a deployment yet
        conn.execute("DELETE FROM deployment_revisions WHERE deployment_id = :d", {"d": gone.id})
        conn.execute("DELETE FROM deployments WHERE id = :d", {"d": gone.id})

    assert lab.tick() == 1
    broken = lab.get("watch-other")
    assert broken.state == "error"
    assert broken.detail == "deployment 'other' no longer exists"
    assert lab.windows("watch-other") == []
    assert lab.get("watch-api").state == "ok"

    api.send(world.world(20, seed=3))
    assert lab.tick() == 1
    assert len(lab.windows("watch-api")) == 2
    assert lab.get("watch-other").state == "error"


def test_windows_by_count_count_every_row_of_requests_of_several_rows(lab: Lab) -> None:
    # a window holds whole requests: at least N rows, every row in exactly one window
    api = lab.deployment("api")
    lab.monitor("watch", "api", window_size=5)
    api.send(world.world(12, seed=1), per_request=3)  # requests of rows 0-5 and 6-11
    assert lab.tick() == 2
    api.send(world.world(6, seed=2), per_request=3)  # rows 12-17: one more window
    lab.tick()
    assert [w.rows for w in lab.windows("watch")] == [6, 6, 6]


def test_a_monitor_sees_only_its_own_projects_deployment(lab: Lab) -> None:
    beta_store = open_store(lab.store.settings.replace(project="beta"))
    try:
        beta = beta_store.projects.ensure_project("beta", "me")
        features = world.world(100, seed=0)[FEATURES]
        register_model(
            lab.model,
            MODEL,
            input_example=features.head(5),
            training_data=features,
            store=beta_store,
        )
        deploy(beta_store, beta.id, "api", make_spec(ModelRef(MODEL, version=1)))
        beta_store.monitoring.create_monitor(
            new_monitor(
                project_id=beta.id, name="watch", deployment="api", window_size=20, user="me"
            )
        )
        lab.deployment("api")
        # where the model server of the default project's `api` deployment writes
        log = PredictionLog(prediction_folder(lab.store, "api"), flush_seconds=0.02)
        try:
            for row in world.world(20, seed=1)[FEATURES].to_numpy().tolist():
                _append(log, [row])
            wait_until(lambda: log.written == 20)
        finally:
            log.close()
        lab.tick()
        watch = beta_store.monitoring.get_monitor(beta.id, "watch")
        assert beta_store.monitoring.list_windows(watch.id) == []
    finally:
        beta_store.close()


def test_training_data_alone_gives_a_reference_profile(lab: Lab) -> None:
    features = world.world(100, seed=0)[FEATURES]
    version = register_model(lab.model, "data-only", training_data=features, store=lab.store)
    manifest = read_manifest(version.manifest_sha, lab.store.objects)
    assert manifest.profile is not None


# -- refusing bad monitors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"window_size": 0}, "window_size: 0"),
        ({"window_size": 10_000_001}, "window_size: 10000001"),
        ({"window_kind": "days"}, "window_kind: 'days'"),
        ({"thresholds": {"kss": 0.1}}, "thresholds: 'kss' is not a threshold"),
        ({"thresholds": {"alpha": "often"}}, "thresholds:"),
        ({"thresholds": {"method_numeric": "bogus"}}, "unknown numeric drift method 'bogus'"),
        ({"thresholds": {"alpha": 2.0}}, "alpha must be between 0 and 1"),
        ({"rules": ["drift_share >> 0.3"]}, "rules:"),
        ({"rules": ["bogus > 1"]}, "rules:"),
        ({"rules": ["a: rows > 1", "a: rows < 2"]}, "rules: two rules have the same name"),
    ],
)
def test_new_monitor_refuses_bad_settings(options: dict[str, Any], said: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        new_monitor(project_id="p", name="m", deployment="d", user="me", **options)
    assert said in caught.value.message


def test_new_monitor_keeps_its_settings_and_starts_now() -> None:
    made = new_monitor(
        project_id="p",
        name="m",
        deployment="d",
        window_kind="seconds",
        window_size=60,
        thresholds={"ks": 0.2, "label_wait": 5},
        rules=[DRIFT_RULE],
        user="me",
        now=1234.5,
    )
    assert (made.window_kind, made.window_size, made.cursor, made.created_at) == (
        "seconds",
        60,
        1234.5,
        1234.5,
    )
    assert made.thresholds == {"ks": 0.2, "label_wait": 5}
    assert (made.state, made.rules) == ("waiting", [DRIFT_RULE])


@pytest.mark.parametrize("thresholds", [{"ks": "high"}, {"label_wait": "soon"}])
def test_new_monitor_refuses_a_threshold_that_is_not_a_number(
    thresholds: dict[str, Any],
) -> None:
    with pytest.raises(InvalidInputError, match="thresholds"):
        new_monitor(project_id="p", name="m", deployment="d", thresholds=thresholds, user="me")
