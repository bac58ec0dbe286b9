"""Policies: the closed loop written down, and the runner that carries it out.

The parser is checked on the example policy and on broken documents (each refusal names
the field). The runner works against a real store, with an injected clock and a launch
function that runs tests/resources/loop_pipeline.py for real, in-process: a matching
event starts one run (once, however many runners look), then the gate, the canary and
promotion or rollback follow, and every failure leaves the champion serving. Canary
traffic is written by hand into the deployment's prediction and feedback logs, each
prediction tagged with the version that answered it.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from treadle.engine import RunOptions, run_pipeline
from treadle.engine.loader import load_file
from treadle.errors import InvalidInputError, NotFoundError
from treadle.loop.policy import Canary, Promote, load_text, parse
from treadle.loop.runner import PolicyRunner
from treadle.monitoring.monitor import (
    LAG_SECONDS,
    Monitoring,
    feedback_dir,
    new_monitor,
    predictions_dir,
)
from treadle.registry import load_model, register_model, set_alias
from treadle.registry.refs import ModelRef
from treadle.serving.deployments import deploy, make_spec
from treadle.serving.feedback import FeedbackLog
from treadle.serving.predlog import PredictionLog
from treadle.store import Store, open_store
from treadle.store.records import PolicyRecord, PolicyRunRecord, RunRecord, new_id
from treadle.types import RunState

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "loop" / "policy.yaml"
PIPELINE_FILE = REPO / "tests" / "resources" / "loop_pipeline.py"
world = load_file(PIPELINE_FILE)
FEATURES: list[str] = world.FEATURES
MODEL: str = world.MODEL
DEPLOYMENT = "loop-api"


def spec(**changes: Any) -> dict[str, Any]:
    """A policy in the shape of the example, for the test pipeline; `section=None`
    drops a section."""
    base: dict[str, Any] = {
        "name": "retrain-on-drift",
        "on": {"event": "monitor.alert", "where": {"monitor": "watch", "alert": "drift"}},
        "run": {"pipeline": "retrain", "params": {"seed": 1, "accuracy": 0.95}},
        "register": {"model": MODEL, "alias": "challenger", "require": ["accuracy >= 0.9"]},
        "canary": {"deployment": DEPLOYMENT, "percent": 25, "requests": 20, "timeout": 60},
        "promote": {"alias": "champion", "metric": "accuracy", "margin": 0.0},
    }
    for key, value in changes.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return base


# -- the policy document ------------------------------------------------------------------


def test_the_example_policy_parses_with_its_bare_on_key() -> None:
    text = EXAMPLE.read_text()
    assert True in yaml.safe_load(text)  # YAML 1.1 reads the bare `on:` key as true
    raw = load_text(text)
    assert "on" in raw and True not in raw
    policy = parse(raw)
    assert parse(yaml.safe_load(text)) == policy
    assert policy.name == "retrain-on-drift"
    assert (policy.event, policy.where) == (
        "monitor.alert",
        {"monitor": "tumor-watch", "alert": "drift"},
    )
    assert policy.pipeline == "training"
    assert policy.params == {"deployment": "$event.deployment", "since": "$event.window.start"}
    assert (policy.model, policy.alias, policy.require) == (
        "tumor-classifier",
        "challenger",
        ["accuracy >= 0.85"],
    )
    assert policy.canary == Canary("tumor-api", 30.0, 120, 120.0)
    assert policy.promote == Promote("champion", "accuracy", 0.0)


def test_a_minimal_policy_gets_the_defaults() -> None:
    policy = parse({"name": "p", "on": {}, "run": {"pipeline": "x"}, "register": {"model": "m"}})
    assert (policy.event, policy.where, policy.params) == ("monitor.alert", {}, {})
    assert (policy.alias, policy.require, policy.canary, policy.promote) == (
        "challenger",
        [],
        None,
        None,
    )
    canary = parse(spec(canary={"deployment": "d"}, promote=None)).canary
    assert canary == Canary("d", 10.0, 100, 600.0)
    # literal parameters become the strings a run takes; a single condition a list
    loose = parse(spec(register={"model": "m", "require": "auc >= 0.7"}))
    assert loose.params == {"seed": "1", "accuracy": "0.95"}
    assert loose.require == ["auc >= 0.7"]


@pytest.mark.parametrize(
    ("document", "said"),
    [
        (["not", "a", "mapping"], "the document must be a mapping"),
        (spec(retry={"times": 3}), "'retry' is not a policy section"),
        (spec(canary=None), "needs a canary section"),
        (spec(promote={"metric": "latency"}), "promote.metric 'latency'"),
        (spec(register={"model": MODEL, "require": ["accuracy >>= 0.9"]}), "accuracy >>= 0.9"),
        (spec(register={"model": MODEL, "require": ["__import__('os')"]}), "__import__"),
        (spec(register={"model": MODEL, "require": [1]}), "register.require"),
        (spec(register={"alias": "x"}), "register.model"),
        (spec(run=None), "'run' must be a mapping"),
        (spec(run={"pipeline": " "}), "run.pipeline"),
        (spec(run={"pipeline": "x", "params": ["a"]}), "run.params must be a mapping"),
        (spec(on={"where": "monitor=watch"}), "on.where must be a mapping"),
        (spec(name=None), "policy.name"),
        (spec(canary={"deployment": DEPLOYMENT, "percent": 150}), "canary.percent"),
        (spec(canary={"deployment": DEPLOYMENT, "percent": True}), "canary.percent"),
        (spec(canary={"deployment": DEPLOYMENT, "timeout": 0}), "canary.timeout"),
        (spec(canary={"percent": 20}), "canary.deployment"),
        (spec(promote={"margin": "small"}), "promote.margin"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_field(document: Any, said: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse(document)
    assert said in caught.value.message


@pytest.mark.parametrize(
    ("text", "said"),
    [("on: [", "not YAML"), ("- a\n- b\n", "must hold a mapping"), ("name: p\non: {}\n", "'run'")],
)
def test_load_text_refuses_what_is_not_a_policy(text: str, said: str) -> None:
    with pytest.raises(InvalidInputError, match=said):
        load_text(text)


# -- the runner ---------------------------------------------------------------------------


class Clock:
    """The real time plus an offset a test moves."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def wait_until(probe: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not probe():
        assert time.monotonic() < deadline, "the log writer did not flush in time"
        time.sleep(0.01)


@dataclasses.dataclass
class Launched:
    pipeline: str
    params: dict[str, str]
    cause: dict[str, Any]
    run_id: str


class RunsForReal:
    """The runner's launch: the test pipeline, run in-process on the same store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls: list[Launched] = []
        self._lock = threading.Lock()

    def __call__(
        self,
        project_id: str,
        pipeline: str,
        params: dict[str, str],
        cause: dict[str, Any],
        user: str,
    ) -> RunRecord:
        found = getattr(world, pipeline)
        run = run_pipeline(
            found,
            found.parse_params(params),
            self.store,
            RunOptions(cause=cause),
            str(PIPELINE_FILE),
        )
        with self._lock:
            self.calls.append(Launched(pipeline, params, cause, run.id))
        return self.store.runs.get_run(run.id)


class RecordsARun(RunsForReal):
    """A launch that only records a RUNNING run (the test finishes it)."""

    def __call__(
        self,
        project_id: str,
        pipeline: str,
        params: dict[str, str],
        cause: dict[str, Any],
        user: str,
    ) -> RunRecord:
        experiment = self.store.projects.ensure_experiment(project_id, "default", user)
        run = RunRecord(
            id=new_id(),
            project_id=project_id,
            experiment_id=experiment.id,
            pipeline_version_id=None,
            name=f"{pipeline}-{new_id()[:6]}",
            state=RunState.RUNNING,
            created_by=user,
            executor="local",
            attempt=1,
            created_at=time.time(),
            started_at=time.time(),
            cause=cause,
        )
        self.store.runs.create_run(run)
        time.sleep(0.05)  # widen the window in which two runners could both start it
        with self._lock:
            self.calls.append(Launched(pipeline, params, cause, run.id))
        return run


@dataclasses.dataclass
class Answer:
    request_id: str
    version: int
    prediction: int
    label: int


class Loop:
    """A store with a champion (`loop-model@1`) served by `loop-api`, a policy runner on
    an injected clock, and the deployment's logs for the test to write."""

    def __init__(self, store: Store) -> None:
        self.store = store
        user = store.settings.user
        self.project_id = store.projects.ensure_project(store.settings.project, user).id
        self.clock = Clock()
        self.launch = RunsForReal(store)
        self.runner = PolicyRunner(store, self.launch, self.clock)
        train = world.world(300, seed=0)
        self.champion = world.fit(train)
        features = train[FEATURES]
        register_model(
            self.champion,
            MODEL,
            input_example=features.head(5),
            training_data=features,
            metrics={"accuracy": 0.9},
            store=store,
        )
        set_alias(f"{MODEL}@1", "champion", store=store)
        deploy(store, self.project_id, DEPLOYMENT, make_spec(ModelRef(MODEL, alias="champion")))
        home = store.settings.home
        self.predictions = PredictionLog(
            predictions_dir(home, store.settings.project, DEPLOYMENT), flush_seconds=0.02
        )
        self.feedback = FeedbackLog(
            feedback_dir(home, store.settings.project, DEPLOYMENT), flush_seconds=0.02
        )
        self._sent = self._labels = 0

    def policy(self, document: dict[str, Any], at: float | None = None) -> PolicyRecord:
        parse(document)
        return self.store.policies.put_policy(
            PolicyRecord(
                id=new_id(),
                project_id=self.project_id,
                name=document["name"],
                spec=document,
                enabled=True,
                created_by="me",
                created_at=self.clock() if at is None else at,
            )
        )

    def alert(self, at: float | None = None, **payload: Any) -> str:
        """A `monitor.alert` event as a monitor records it; returns its id."""
        now = self.clock() if at is None else at
        body = {
            "monitor": "watch",
            "alert": "drift",
            "deployment": DEPLOYMENT,
            "window": {"seq": 3, "start": now - 30, "end": now - 1, "rows": 60},
            **payload,
        }
        event, _ = self.store.automation.record_event(
            self.project_id, "monitor.alert", uuid.uuid4().hex, body, now
        )
        return event.id

    def runs(self) -> list[PolicyRunRecord]:
        return self.store.policies.list_runs(self.project_id)

    def only_run(self) -> PolicyRunRecord:
        (run,) = self.runs()
        return run

    def holder(self, alias: str) -> int | None:
        model = self.store.models.get_model(self.project_id, MODEL)
        try:
            return self.store.models.get_alias(model.id, alias).version
        except NotFoundError:
            return None

    def serving(self) -> tuple[str, list[tuple[int, str, float]]]:
        """The deployment's policy and what its current revision serves."""
        deployment = self.store.deployments.get_deployment(self.project_id, DEPLOYMENT)
        revision = self.store.deployments.current_revision(deployment.id)
        assert revision is not None
        targets = [(t["version"], t["role"], t["weight"]) for t in revision.targets]
        return deployment.spec["policy"], targets

    def answer(self, version: int, frame: pd.DataFrame, right: Sequence[bool]) -> list[Answer]:
        """Log one request per row answered by `version`, right or wrong as told."""
        out = []
        for (_, row), correct in zip(frame.iterrows(), right, strict=True):
            label = int(row[world.LABEL])
            predicted = label if correct else 1 - label
            request_id = uuid.uuid4().hex
            self.predictions.append(
                request_id,
                MODEL,
                version,
                3.0,
                FEATURES,
                [[float(row[f]) for f in FEATURES]],
                [predicted],
                world.DTYPES,
            )
            out.append(Answer(request_id, version, predicted, label))
        self._sent += len(out)
        wait_until(lambda: self.predictions.written >= self._sent)
        return out

    def label(self, answers: Sequence[Answer]) -> None:
        for a in answers:
            self.feedback.append(a.request_id, 0, a.version, a.label)
        self._labels += len(answers)
        wait_until(lambda: self.feedback.written >= self._labels)

    def close(self) -> None:
        self.predictions.close()
        self.feedback.close()


@pytest.fixture
def loop(store: Store) -> Iterator[Loop]:
    made = Loop(store)
    yield made
    made.close()


def statuses(run: PolicyRunRecord) -> list[tuple[str, str]]:
    return [(s["step"], s["status"]) for s in run.steps]


CANARY_STARTED = [
    ("event", "seen"),
    ("run", "started"),
    ("run", "succeeded"),
    ("register", "passed"),
    ("canary", "started"),
]


def test_an_event_from_before_the_policy_is_ignored_and_a_matching_one_starts_one_run(
    loop: Loop,
) -> None:
    created = loop.clock()
    loop.alert(at=created - 10)  # before the policy: not its business
    loop.policy(spec(), at=created)
    loop.alert(at=created + 1, alert="accuracy")  # another alert of the monitor
    loop.alert(at=created + 2, monitor="someone-else")
    loop.runner.tick()
    assert loop.runs() == [] and loop.launch.calls == []

    event_id = loop.alert(at=created + 3)
    loop.runner.tick()
    run = loop.only_run()
    (call,) = loop.launch.calls
    assert call.pipeline == "retrain" and call.params == {"seed": "1", "accuracy": "0.95"}
    assert call.cause["policy"] == "retrain-on-drift" and call.cause["event_id"] == event_id
    assert call.cause["policy_run_id"] == run.id
    assert call.cause["event"]["deployment"] == DEPLOYMENT
    assert loop.store.runs.get_run(call.run_id).cause == call.cause

    # the run finished in-process: the same pass registered, gated and started the canary
    assert (run.event_id, run.state, run.step) == (event_id, "running", "canary")
    assert statuses(run) == CANARY_STARTED
    assert run.context["run_id"] == call.run_id
    assert (run.context["version"], run.context["champion"]) == (2, 1)
    assert loop.holder("challenger") == 2 and loop.holder("champion") == 1
    assert loop.serving() == ("canary", [(1, "primary", 0.75), (2, "canary", 0.25)])

    loop.runner.tick()  # the event is claimed: nothing new starts
    assert len(loop.launch.calls) == 1 and len(loop.runs()) == 1


def test_event_parameters_reach_the_run_and_a_disabled_policy_starts_nothing(
    loop: Loop,
) -> None:
    document = spec(run={"pipeline": "retrain", "params": {"seed": "$event.window.seq"}})
    record = loop.policy(document)
    loop.store.policies.set_enabled(record.id, False)
    loop.alert()
    loop.runner.tick()
    assert loop.runs() == []

    loop.store.policies.set_enabled(record.id, True)
    loop.runner.tick()  # the event came while it was off; it is still pending
    assert loop.launch.calls[0].params == {"seed": "3"}
    assert loop.only_run().step == "canary"


def test_a_policy_run_is_claimed_once_across_two_runners(loop: Loop) -> None:
    launch = RecordsARun(loop.store)
    other_store = open_store(loop.store.settings)
    try:
        runners = [
            PolicyRunner(loop.store, launch, loop.clock),
            PolicyRunner(other_store, launch, loop.clock),
        ]
        loop.policy(spec())
        loop.alert()
        barrier = threading.Barrier(len(runners))
        errors: list[BaseException] = []

        def tick(runner: PolicyRunner) -> None:
            try:
                barrier.wait(timeout=10)
                runner.tick()
            except BaseException as exc:  # re-raised in the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=tick, args=(r,)) for r in runners]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == []
        assert len(launch.calls) == 1
        run = loop.only_run()
        assert (run.state, run.step) == ("running", "run")

        for runner in runners:  # the run has not finished: both wait
            runner.tick()
        assert loop.only_run().step == "run" and len(launch.calls) == 1
    finally:
        other_store.close()


def test_a_failed_run_ends_failed_and_leaves_aliases_and_the_deployment(loop: Loop) -> None:
    before = loop.serving()
    loop.policy(spec(run={"pipeline": "retrain", "params": {"fail": True}}))
    loop.alert()
    loop.runner.tick()
    run = loop.only_run()
    assert (run.state, run.step) == ("failed", "done")
    assert statuses(run) == [("event", "seen"), ("run", "started"), ("run", "failed")]
    detail = run.steps[-1]["detail"]
    assert "FAILED" in detail and "failing on purpose" in detail
    assert "the champion keeps serving" in detail
    assert loop.holder("champion") == 1 and loop.holder("challenger") is None
    assert loop.serving() == before == ("single", [(1, "primary", 1.0)])


def test_a_run_that_never_started_ends_failed(loop: Loop) -> None:
    loop.policy(spec(run={"pipeline": "retrain", "params": {"epochs": 3}}))
    loop.alert()
    loop.runner.tick()
    run = loop.only_run()
    assert run.state == "failed"
    assert "did not start" in run.steps[-1]["detail"] and "'epochs'" in run.steps[-1]["detail"]
    assert loop.serving() == ("single", [(1, "primary", 1.0)])


def test_a_model_failing_the_gate_ends_not_promoted(loop: Loop) -> None:
    loop.policy(spec(run={"pipeline": "retrain", "params": {"accuracy": 0.5}}))
    loop.alert()
    loop.runner.tick()
    run = loop.only_run()
    assert run.state == "not_promoted"
    assert statuses(run)[-1] == ("register", "not_promoted")
    detail = run.steps[-1]["detail"]
    assert f"{MODEL}@2 not registered as challenger" in detail and "accuracy >= 0.9" in detail
    versions = loop.store.models.list_versions(
        loop.store.models.get_model(loop.project_id, MODEL).id
    )
    assert [v.version for v in versions] == [1, 2]  # registered, just not promoted
    assert loop.holder("champion") == 1 and loop.holder("challenger") is None
    assert loop.serving() == ("single", [(1, "primary", 1.0)])


def test_a_canary_that_times_out_rolls_back(loop: Loop) -> None:
    loop.policy(spec())
    loop.alert()
    loop.runner.tick()
    assert loop.only_run().step == "canary"

    # a few labelled answers, fewer than the 20 it needs
    loop.label(loop.answer(2, world.world(5, seed=3), [True] * 5))
    loop.runner.tick()
    assert loop.only_run().state == "running"

    loop.clock.offset = 61  # past the 60 s timeout
    loop.runner.tick()
    run = loop.only_run()
    assert run.state == "rolled_back"
    assert "answered 5 labelled requests in 60 s, not 20" in run.steps[-1]["detail"]
    assert loop.holder("champion") == 1
    assert loop.serving() == ("single", [(1, "primary", 1.0)])


def test_a_challenger_better_on_live_labels_is_promoted(loop: Loop) -> None:
    loop.policy(spec())
    loop.alert()
    loop.runner.tick()
    data = world.world(100, seed=5)
    champion = loop.answer(1, data.iloc[:60], [i % 2 == 0 for i in range(60)])  # half right
    challenger = loop.answer(2, data.iloc[60:], [i != 0 for i in range(40)])  # 39 of 40
    loop.label(champion + challenger[:10])
    loop.runner.tick()
    assert loop.only_run().step == "canary"  # 10 labelled of the 20 it needs

    loop.label(challenger[10:])
    loop.runner.tick()
    run = loop.only_run()
    assert run.state == "promoted"
    assert statuses(run)[-1] == ("promote", "done")
    detail = run.steps[-1]["detail"]
    assert detail.startswith(f"{MODEL}@2 is champion")
    assert "live accuracy: candidate 0.975 vs champion 0.5" in detail
    assert loop.holder("champion") == 2
    assert loop.serving() == ("single", [(2, "primary", 1.0)])
    history = loop.store.models.alias_history(
        loop.store.models.get_model(loop.project_id, MODEL).id, "champion"
    )
    assert "promoted by policy" in history[-1].reason


def test_a_challenger_worse_on_live_labels_is_rolled_back(loop: Loop) -> None:
    loop.policy(spec(promote={"alias": "champion", "metric": "accuracy", "margin": 0.05}))
    loop.alert()
    loop.runner.tick()
    data = world.world(100, seed=6)
    champion = loop.answer(1, data.iloc[:60], [i % 10 != 0 for i in range(60)])  # 0.9
    challenger = loop.answer(2, data.iloc[60:80], [i % 5 != 0 for i in range(20)])  # 0.8
    loop.label(champion + challenger)
    loop.runner.tick()
    run = loop.only_run()
    assert run.state == "rolled_back"
    assert "live accuracy: candidate 0.8 vs champion 0.9 (margin 0.05)" in run.steps[-1]["detail"]
    assert loop.holder("champion") == 1 and loop.holder("challenger") == 2
    assert loop.serving() == ("single", [(1, "primary", 1.0)])


def test_a_policy_keeps_seeing_events_after_many_that_were_not_for_it(loop: Loop) -> None:
    start = loop.clock()
    loop.policy(spec(), at=start)
    for i in range(200):  # another monitor's alerts in the same project
        loop.alert(at=start + 1 + i * 0.001, monitor="another-monitor")
    loop.runner.tick()
    assert loop.runs() == []
    loop.alert(at=start + 5)
    loop.runner.tick()
    assert len(loop.runs()) == 1


def test_the_closed_loop_in_process_drift_retrain_canary_promote(loop: Loop) -> None:
    """A monitor's drift alert drives the policy: the run trains on the labelled
    predictions the deployment logged since the drift began, and the new model wins
    the canary on live labels."""
    store = loop.store
    store.monitoring.create_monitor(
        new_monitor(
            project_id=loop.project_id,
            name="watch",
            deployment=DEPLOYMENT,
            window_size=60,
            rules=["drift: drift_share > 0.3 for 2 windows"],
            user="me",
        )
    )
    monitoring = Monitoring(store, lambda: time.time() + LAG_SECONDS + 0.01)
    loop.policy(
        spec(
            run={
                "pipeline": "retrain",
                "params": {"deployment": "$event.deployment", "since": "$event.window.start"},
            },
            register={"model": MODEL, "require": ["accuracy >= 0.8"]},
        )
    )

    def serve(version: int, frame: pd.DataFrame) -> list[Answer]:
        predictor = loop.champion if version == 1 else load_model(f"{MODEL}@2", store=store)
        predicted = [int(p) for p in predictor.predict(frame[FEATURES])]
        right = [p == y for p, y in zip(predicted, frame[world.LABEL], strict=True)]
        answers = loop.answer(version, frame, right)
        loop.label(answers)
        return answers

    serve(1, world.world(60, seed=11))
    assert monitoring.tick() == 1
    serve(1, world.world(120, seed=12, shift=1.5))
    assert monitoring.tick() == 2
    (alert,) = store.monitoring.list_alerts(loop.project_id)
    assert alert.state == "firing"

    loop.runner.tick()
    run = loop.only_run()
    assert statuses(run) == CANARY_STARTED, run.steps
    trained = store.runs.get_run(run.context["run_id"])
    params = store.tracking.get_params(trained.id)
    assert params["deployment"] == DEPLOYMENT
    window = store.monitoring.list_windows(alert.monitor_id)[-2]  # the first drifted one
    assert float(params["since"]) == pytest.approx(window.start_ts)

    shifted = world.world(120, seed=13, shift=1.5)
    old = serve(1, shifted.iloc[:90])
    new = serve(2, shifted.iloc[90:])
    loop.runner.tick()
    run = loop.only_run()
    assert run.state == "promoted", run.steps[-1]
    accuracy = [sum(a.prediction == a.label for a in x) / len(x) for x in (old, new)]
    assert accuracy[1] > accuracy[0] + 0.2
    assert loop.holder("champion") == 2
    assert loop.serving() == ("single", [(2, "primary", 1.0)])
