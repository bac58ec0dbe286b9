"""Automation: cron due times through daylight saving, the scheduler against a clock that
jumps, triggers acting on events once, webhook signatures, and why a run happened.

The scheduler and dispatcher run against the real store; their output boundary, the
`launch` callback, is a small function that records the call and writes a real RUNNING
run, so `forbid`, `replace` and the events runs make work against real rows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from treadle.automation import cron
from treadle.automation.scheduler import GRACE_SECONDS, Fired, Scheduler, new_schedule
from treadle.automation.triggers import (
    TOLERANCE_SECONDS,
    Dispatcher,
    lookup,
    matches,
    new_trigger,
    render_params,
    sign,
    verify,
)
from treadle.automation.why import explain
from treadle.config import Settings
from treadle.errors import (
    AccessError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    TreadleError,
)
from treadle.store import Store, open_store
from treadle.store.records import (
    EventRecord,
    RunRecord,
    ScheduleRecord,
    TriggerRecord,
    new_id,
)
from treadle.types import RunState

UTC = dt.timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
HOUR = 3600.0


def at(tz: dt.tzinfo, *fields: int, fold: int = 0) -> float:
    """The Unix time of a wall-clock time in `tz` (fold=1: the second of a repeated hour)."""
    return dt.datetime(*fields, tzinfo=tz, fold=fold).timestamp()


def local(ts: float, tz: dt.tzinfo) -> str:
    return dt.datetime.fromtimestamp(ts, tz).strftime("%m-%d %H:%M%z")


T0 = at(UTC, 2026, 1, 5, 10, 0)
"""A Monday, 10:00 UTC: hourly schedules are due at T0 + n hours."""


@dataclasses.dataclass
class Clock:
    now: float

    def __call__(self) -> float:
        return self.now


@dataclasses.dataclass(frozen=True)
class Launched:
    project_id: str
    pipeline: str
    params: dict[str, str]
    cause: dict[str, Any]
    user: str
    run_id: str


class Launcher:
    """The scheduler's and dispatcher's output: a RUNNING run row, and a note of the call."""

    def __init__(self, store: Store, experiment_id: str) -> None:
        self.store = store
        self.experiment_id = experiment_id
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
        run = RunRecord(
            id=new_id(),
            project_id=project_id,
            experiment_id=self.experiment_id,
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
        with self._lock:
            self.calls.append(Launched(project_id, pipeline, params, cause, user, run.id))
        return run

    @property
    def dues(self) -> list[float]:
        return [c.cause["due_at"] for c in self.calls]


@dataclasses.dataclass
class World:
    store: Store
    project_id: str
    experiment_id: str
    launch: Launcher

    def schedule(
        self,
        name: str = "hourly",
        cron_expression: str = "0 * * * *",
        now: float = T0 + 30,
        **options: Any,
    ) -> ScheduleRecord:
        return self.store.automation.create_schedule(
            new_schedule(
                project_id=self.project_id,
                name=name,
                pipeline="train",
                cron_expression=cron_expression,
                params={"rows": "100"},
                user="me",
                now=now,
                **options,
            )
        )

    def trigger(self, name: str, kind: str, now: float, **options: Any) -> TriggerRecord:
        record, secret = new_trigger(
            project_id=self.project_id,
            name=name,
            kind=kind,
            pipeline="retrain",
            user="me",
            now=now,
            **options,
        )
        return self.store.automation.create_trigger(record, secret)

    def finished_run(self, state: RunState, ended_at: float) -> RunRecord:
        run = RunRecord(
            id=new_id(),
            project_id=self.project_id,
            experiment_id=self.experiment_id,
            pipeline_version_id=None,
            name=f"upstream-{new_id()[:6]}",
            state=RunState.RUNNING,
            created_by="me",
            executor="local",
            attempt=1,
            created_at=ended_at - 5,
        )
        self.store.runs.create_run(run)
        return self.store.runs.set_run_state(run.id, state, at=ended_at)


def world_of(store: Store) -> World:
    project = store.projects.ensure_project("default", "me")
    experiment = store.projects.ensure_experiment(project.id, "default", "me")
    return World(store, project.id, experiment.id, Launcher(store, experiment.id))


@pytest.fixture
def world(store: Store) -> World:
    return world_of(store)


@pytest.fixture
def any_world(any_store: Store) -> World:
    return world_of(any_store)


@pytest.fixture
def second_store(any_store: Store) -> Iterator[Store]:
    """A second store (its own connections) on the same database as `any_store`."""
    other = open_store(any_store.settings)
    yield other
    other.close()


def run_in_threads(jobs: list[Callable[[], Any]]) -> list[Any]:
    """Run the jobs at once, each in a thread; their results, or the first error raised."""
    barrier = threading.Barrier(len(jobs))
    results: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []

    def go(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = jobs[i]()
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    if errors:
        raise errors[0]
    return results


# -- cron -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression", ["not a cron", "61 * * * *", "* * * *", "* * * * * * *", "", "* 25 * * *"]
)
def test_check_refuses_an_invalid_expression_naming_cron(expression: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        cron.check(expression)
    assert caught.value.message.startswith("cron:")


@pytest.mark.parametrize("timezone", ["Mars/Olympus_Mons", "Europe/Berlinn", "not a zone"])
def test_check_refuses_an_unknown_time_zone_naming_timezone(timezone: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        cron.check("0 * * * *", timezone)
    assert caught.value.message.startswith("timezone:")


def test_six_fields_give_seconds() -> None:
    cron.check("* * * * * */10")
    assert list(cron.due_times("* * * * * */10", "UTC", T0, T0 + 60)) == [
        T0 + s for s in (10, 20, 30, 40, 50, 60)
    ]
    # minute 0 of each hour, at second 30
    assert list(cron.due_times("0 * * * * 30", "UTC", T0, T0 + 2 * HOUR)) == [
        T0 + 30,
        T0 + HOUR + 30,
    ]


def test_due_times_exclude_after_and_include_until() -> None:
    assert list(cron.due_times("0 * * * *", "UTC", T0, T0 + 2 * HOUR)) == [
        T0 + HOUR,
        T0 + 2 * HOUR,
    ]
    assert cron.next_due("0 * * * *", "UTC", T0) == T0 + HOUR
    assert cron.next_due("0 * * * *", "UTC", T0 - 1) == T0


@pytest.mark.parametrize(
    ("expression", "tz", "start", "end", "expected"),
    [
        pytest.param(
            "30 2 * * *",
            BERLIN,
            (2026, 3, 28, 12),
            (2026, 3, 30, 12),
            ["03-29 03:00+0200", "03-30 02:30+0200"],
            id="berlin-spring-forward-first-valid-minute",
        ),
        pytest.param(
            "30 2 * * *",
            BERLIN,
            (2026, 10, 24, 12),
            (2026, 10, 26, 12),
            ["10-25 02:30+0200", "10-26 02:30+0100"],
            id="berlin-fall-back-once",
        ),
        pytest.param(
            "*/30 * * * *",
            BERLIN,
            (2026, 10, 25, 1, 0),
            (2026, 10, 25, 4, 0),
            [
                "10-25 01:30+0200",
                "10-25 02:00+0200",
                "10-25 02:30+0200",
                "10-25 02:00+0100",
                "10-25 02:30+0100",
                "10-25 03:00+0100",
                "10-25 03:30+0100",
                "10-25 04:00+0100",
            ],
            id="berlin-half-hourly-fall-back-real-time",
        ),
        pytest.param(
            "*/30 * * * *",
            BERLIN,
            (2026, 3, 29, 1, 0),
            (2026, 3, 29, 4, 0),
            ["03-29 01:30+0100", "03-29 03:00+0200", "03-29 03:30+0200", "03-29 04:00+0200"],
            id="berlin-half-hourly-spring-forward-real-time",
        ),
        pytest.param(
            "0 1-3 * * *",
            BERLIN,
            (2026, 10, 24, 12),
            (2026, 10, 25, 12),
            ["10-25 01:00+0200", "10-25 02:00+0200", "10-25 03:00+0100"],
            id="berlin-hour-range-fall-back",
        ),
        pytest.param(
            "30 2 * * *",
            NEW_YORK,
            (2026, 3, 7, 12),
            (2026, 3, 9, 12),
            ["03-08 03:00-0400", "03-09 02:30-0400"],
            id="new-york-spring-forward",
        ),
        pytest.param(
            "30 1 * * *",
            NEW_YORK,
            (2026, 10, 31, 12),
            (2026, 11, 2, 12),
            ["11-01 01:30-0400", "11-02 01:30-0500"],
            id="new-york-fall-back-once",
        ),
        pytest.param(
            "0 * * * *",
            NEW_YORK,
            (2026, 11, 1, 0, 0),
            (2026, 11, 1, 3, 0),
            ["11-01 01:00-0400", "11-01 01:00-0500", "11-01 02:00-0500", "11-01 03:00-0500"],
            id="new-york-hourly-fall-back-real-time",
        ),
    ],
)
def test_due_times_through_daylight_saving(
    expression: str,
    tz: ZoneInfo,
    start: tuple[int, ...],
    end: tuple[int, ...],
    expected: list[str],
) -> None:
    dues = list(cron.due_times(expression, str(tz), at(tz, *start), at(tz, *end)))
    assert [local(d, tz) for d in dues] == expected
    if expression in ("*/30 * * * *", "0 * * * *"):
        step = 1800 if expression.startswith("*/30") else HOUR
        assert all(b - a == step for a, b in itertools.pairwise(dues)), "real time, evenly"


def test_the_fall_back_fire_is_not_repeated_across_two_calls() -> None:
    first = at(BERLIN, 2026, 10, 25, 2, 30)  # 02:30 CEST; 02:30 CET is an hour later
    assert at(BERLIN, 2026, 10, 25, 2, 30, fold=1) - first == HOUR
    before = at(BERLIN, 2026, 10, 24, 12)
    noon = at(BERLIN, 2026, 10, 25, 12)

    assert list(cron.due_times("30 2 * * *", "Europe/Berlin", before, first)) == [first]
    assert list(cron.due_times("30 2 * * *", "Europe/Berlin", first, noon)) == []
    assert local(cron.next_due("30 2 * * *", "Europe/Berlin", first), BERLIN) == (
        "10-26 02:30+0100"
    )


def test_a_repeated_hour_runs_each_minute_of_a_wall_clock_schedule_once() -> None:
    dues = cron.due_times(
        "*/30 2 * * *", "Europe/Berlin", at(BERLIN, 2026, 10, 24, 12), at(BERLIN, 2026, 10, 25, 12)
    )
    assert [local(d, BERLIN) for d in dues] == ["10-25 02:00+0200", "10-25 02:30+0200"]


def test_an_expression_never_due_is_refused_as_invalid_input() -> None:
    with pytest.raises(InvalidInputError) as caught:
        cron.check("0 0 30 2 *")
        cron.next_due("0 0 30 2 *", "UTC", T0)
    assert caught.value.message.startswith("cron:")


# -- schedules: validation and the store ---------------------------------------------------


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"cron_expression": "every day"}, "cron:"),
        ({"timezone": "Atlantis/Capital"}, "timezone:"),
        ({"catchup": "some"}, "catchup:"),
        ({"concurrency": "queue"}, "concurrency:"),
        ({"max_catchup": 0}, "max_catchup:"),
        ({"max_catchup": 1001}, "max_catchup:"),
    ],
)
def test_new_schedule_refuses_bad_options(options: dict[str, Any], field: str) -> None:
    values: dict[str, Any] = {"cron_expression": "0 * * * *", **options}
    with pytest.raises(InvalidInputError) as caught:
        new_schedule(project_id="p", name="s", pipeline="train", user="me", now=T0, **values)
    assert caught.value.message.startswith(field)


def test_new_schedule_is_due_from_now_on() -> None:
    s = new_schedule(
        project_id="p", name="s", pipeline="train", cron_expression="0 * * * *", user="me", now=T0
    )
    assert (s.handled_until, s.created_at, s.paused) == (T0, T0, False)
    assert (s.catchup, s.concurrency, s.max_catchup, s.timezone) == ("skip", "allow", 10, "UTC")


def test_store_keeps_schedules_and_claims_each_fire_once(any_world: World) -> None:
    automation = any_world.store.automation
    s = any_world.schedule(timezone="Europe/Berlin", catchup="all", max_catchup=3)
    assert automation.get_schedule(any_world.project_id, "hourly") == s
    assert automation.get_schedule_by_id(s.id) == s
    assert automation.list_schedules() == [s]
    assert automation.list_schedules(any_world.project_id) == [s]
    with pytest.raises(ConflictError):
        any_world.schedule()
    with pytest.raises(NotFoundError):
        automation.get_schedule(any_world.project_id, "nope")

    automation.advance(s.id, T0 + HOUR)
    automation.advance(s.id, T0)  # never back
    assert automation.get_schedule_by_id(s.id).handled_until == T0 + HOUR

    paused = automation.set_paused(s.id, True, T0 + 10)  # earlier than handled: kept
    assert (paused.paused, paused.handled_until) == (True, T0 + HOUR)
    resumed = automation.set_paused(s.id, False, T0 + 5 * HOUR)
    assert (resumed.paused, resumed.handled_until) == (False, T0 + 5 * HOUR)

    fire_id = automation.claim_fire(s.id, T0 + HOUR, T0 + HOUR + 1)
    assert fire_id is not None
    assert automation.claim_fire(s.id, T0 + HOUR, T0 + HOUR + 2) is None
    automation.finish_fire(fire_id, None, "skipped: test")
    [fire] = automation.list_fires(s.id)
    assert (fire.id, fire.due_at, fire.fired_at, fire.run_id, fire.outcome) == (
        fire_id,
        T0 + HOUR,
        T0 + HOUR + 1,
        None,
        "skipped: test",
    )

    automation.delete_schedule(s.id)
    assert automation.list_schedules() == []
    assert automation.list_fires(s.id) == []


# -- the scheduler ----------------------------------------------------------------------


def test_a_due_time_fires_once_within_a_tick(world: World) -> None:
    s = world.schedule()
    clock = Clock(T0 + HOUR - 30)
    scheduler = Scheduler(world.store, world.launch, clock=clock)
    assert scheduler.tick() == []

    clock.now = T0 + HOUR + 0.5
    [fired] = scheduler.tick()
    assert fired == Fired("hourly", T0 + HOUR, fired.run_id, "started")
    assert scheduler.tick() == []
    assert Scheduler(world.store, world.launch, clock=clock).tick() == []

    [call] = world.launch.calls
    assert (call.project_id, call.pipeline, call.params, call.user) == (
        world.project_id,
        "train",
        {"rows": "100"},
        "me",
    )
    [fire] = world.store.automation.list_fires(s.id)
    assert (fire.due_at, fire.run_id, fire.outcome) == (T0 + HOUR, fired.run_id, "started")
    assert world.store.automation.get_schedule_by_id(s.id).handled_until == T0 + HOUR

    run = world.store.runs.get_run(call.run_id)
    assert run.cause == {
        "kind": "schedule",
        "schedule": "hourly",
        "schedule_id": s.id,
        "cron": "0 * * * *",
        "timezone": "UTC",
        "due_at": T0 + HOUR,
        "fire_id": fire.id,
    }
    assert explain(run.cause, None).startswith("schedule 'hourly' (0 * * * * UTC) was due at ")


@pytest.mark.parametrize(
    ("catchup", "max_catchup", "now", "expected"),
    [
        pytest.param("skip", 10, T0 + 3.5 * HOUR, [], id="skip-late"),
        pytest.param("skip", 10, T0 + 3 * HOUR + GRACE_SECONDS, [3], id="skip-within-grace"),
        pytest.param("skip", 10, T0 + 3 * HOUR + GRACE_SECONDS + 1, [], id="skip-past-grace"),
        pytest.param("once", 10, T0 + 3.5 * HOUR, [3], id="once-newest"),
        pytest.param("all", 2, T0 + 3.5 * HOUR, [2, 3], id="all-capped"),
        pytest.param("all", 10, T0 + 3.5 * HOUR, [1, 2, 3], id="all"),
    ],
)
def test_catchup_after_the_clock_jumps_forward_three_hours(
    world: World, catchup: str, max_catchup: int, now: float, expected: list[int]
) -> None:
    s = world.schedule(catchup=catchup, max_catchup=max_catchup)
    clock = Clock(now)
    scheduler = Scheduler(world.store, world.launch, clock=clock)

    fired = scheduler.tick()
    assert [f.due_at for f in fired] == [T0 + n * HOUR for n in expected]
    assert world.launch.dues == [T0 + n * HOUR for n in expected]  # oldest first
    # every missed due time is handled, fired or let go: nothing comes back later
    assert world.store.automation.get_schedule_by_id(s.id).handled_until == T0 + 3 * HOUR
    assert scheduler.tick() == []
    clock.now = T0 + 4 * HOUR + 1
    assert [f.due_at for f in scheduler.tick()] == [T0 + 4 * HOUR]


def test_a_clock_going_back_fires_nothing_until_it_passes_what_was_handled(
    world: World,
) -> None:
    s = world.schedule(catchup="all")
    clock = Clock(T0 + HOUR + 1)
    scheduler = Scheduler(world.store, world.launch, clock=clock)
    assert len(scheduler.tick()) == 1

    for back in (T0 - 5 * HOUR, T0 + 1, T0 + HOUR + 1, T0 + 1.5 * HOUR):
        clock.now = back
        assert scheduler.tick() == []
        assert Scheduler(world.store, world.launch, clock=clock).tick() == []
        assert world.store.automation.get_schedule_by_id(s.id).handled_until == T0 + HOUR

    clock.now = T0 + 2 * HOUR + 1
    assert [f.due_at for f in scheduler.tick()] == [T0 + 2 * HOUR]
    assert world.launch.dues == [T0 + HOUR, T0 + 2 * HOUR]
    assert [f.due_at for f in world.store.automation.list_fires(s.id)] == [
        T0 + 2 * HOUR,
        T0 + HOUR,
    ]


def test_due_times_missed_while_paused_are_let_go(world: World) -> None:
    s = world.schedule(catchup="all")
    clock = Clock(T0 + 600)
    scheduler = Scheduler(world.store, world.launch, clock=clock)
    world.store.automation.set_paused(s.id, True, clock.now)

    clock.now = T0 + 3 * HOUR + 5
    assert scheduler.tick() == []
    world.store.automation.set_paused(s.id, False, clock.now)
    assert scheduler.tick() == []

    clock.now = T0 + 4 * HOUR + 1
    assert [f.due_at for f in scheduler.tick()] == [T0 + 4 * HOUR]
    assert world.launch.dues == [T0 + 4 * HOUR]


def test_forbid_skips_while_the_last_run_is_running(world: World) -> None:
    s = world.schedule(concurrency="forbid")
    clock = Clock(T0 + HOUR + 1)
    scheduler = Scheduler(world.store, world.launch, clock=clock)
    [first] = scheduler.tick()
    assert first.outcome == "started" and first.run_id is not None

    clock.now = T0 + 2 * HOUR + 1
    [skipped] = scheduler.tick()
    outcome = f"skipped: run {first.run_id[:8]} of this schedule is still running"
    assert skipped == Fired("hourly", T0 + 2 * HOUR, None, outcome)
    assert len(world.launch.calls) == 1
    latest = world.store.automation.list_fires(s.id)[0]
    assert (latest.due_at, latest.run_id, latest.outcome) == (T0 + 2 * HOUR, None, outcome)

    world.store.runs.set_run_state(first.run_id, RunState.SUCCEEDED, at=clock.now)
    clock.now = T0 + 3 * HOUR + 1
    [again] = scheduler.tick()
    assert (again.due_at, again.outcome) == (T0 + 3 * HOUR, "started")
    assert world.launch.dues == [T0 + HOUR, T0 + 3 * HOUR]


def test_allow_starts_another_run_beside_a_running_one(world: World) -> None:
    world.schedule(concurrency="allow")
    clock = Clock(T0 + HOUR + 1)
    scheduler = Scheduler(world.store, world.launch, clock=clock)
    scheduler.tick()
    clock.now = T0 + 2 * HOUR + 1
    scheduler.tick()
    runs = [world.store.runs.get_run(c.run_id) for c in world.launch.calls]
    assert [r.state for r in runs] == [RunState.RUNNING, RunState.RUNNING]


def test_replace_cancels_the_running_run(world: World) -> None:
    world.schedule(concurrency="replace")
    cancelled: list[str] = []

    def cancel(run_id: str) -> bool:
        cancelled.append(run_id)
        world.store.runs.set_run_state(run_id, RunState.CANCELLED, at=time.time())
        return True

    clock = Clock(T0 + HOUR + 1)
    scheduler = Scheduler(world.store, world.launch, cancel, clock=clock)
    [first] = scheduler.tick()
    assert cancelled == []

    clock.now = T0 + 2 * HOUR + 1
    [second] = scheduler.tick()
    assert cancelled == [first.run_id]
    assert second.outcome == "started"
    assert world.launch.calls[-1].cause["replaced"] == [first.run_id]

    clock.now = T0 + 3 * HOUR + 1
    scheduler.tick()
    assert cancelled == [first.run_id, second.run_id]  # the cancelled one is not asked again


@pytest.mark.parametrize(
    ("night", "due"),
    [
        pytest.param((2026, 3, 29), at(BERLIN, 2026, 3, 29, 3, 0), id="spring-forward"),
        pytest.param((2026, 10, 25), at(BERLIN, 2026, 10, 25, 2, 30), id="fall-back"),
    ],
)
def test_a_daily_schedule_fires_once_on_a_daylight_saving_night(
    world: World, night: tuple[int, int, int], due: float
) -> None:
    midnight = at(BERLIN, *night, 0, 0)
    world.schedule("nightly", "30 2 * * *", now=midnight - 6 * HOUR, timezone="Europe/Berlin")
    clock = Clock(midnight)
    scheduler = Scheduler(world.store, world.launch, clock=clock)
    while clock.now < midnight + 6 * HOUR:  # every five minutes, by real time
        clock.now += 300
        scheduler.tick()
    assert world.launch.dues == [due]


def test_resuming_during_the_repeated_hour_does_not_run_the_night_twice(world: World) -> None:
    first = at(BERLIN, 2026, 10, 25, 2, 30)
    s = world.schedule("nightly", "30 2 * * *", now=first - 6 * HOUR, timezone="Europe/Berlin")
    clock = Clock(first + 5)
    scheduler = Scheduler(world.store, world.launch, clock=clock)
    assert len(scheduler.tick()) == 1

    world.store.automation.set_paused(s.id, True, first + 600)  # 02:40 CEST
    world.store.automation.set_paused(s.id, False, first + 900)  # 02:45 CEST
    while clock.now < first + 3 * HOUR:
        clock.now += 300
        scheduler.tick()
    assert world.launch.dues == [first]


def test_a_schedule_that_is_never_due_does_not_stop_the_others(world: World) -> None:
    world.schedule()
    try:
        world.schedule("february-30", "0 0 30 2 *")
    except InvalidInputError:
        pass  # refused when made: as good
    announced: list[str] = []
    scheduler = Scheduler(
        world.store, world.launch, clock=Clock(T0 + HOUR + 1), announce=announced.append
    )
    assert [f.schedule for f in scheduler.tick()] == ["hourly"]


def test_a_launch_error_is_recorded_as_failed_to_start(world: World) -> None:
    s = world.schedule()

    def launch(*args: Any) -> RunRecord:
        raise NotFoundError("no pipeline named 'train'")

    announced: list[str] = []
    scheduler = Scheduler(
        world.store, launch, clock=Clock(T0 + HOUR + 1), announce=announced.append
    )
    [fired] = scheduler.tick()
    assert fired == Fired("hourly", T0 + HOUR, None, "failed to start: no pipeline named 'train'")
    assert world.store.automation.list_fires(s.id)[0].outcome == fired.outcome
    assert announced == [f"schedule hourly: {fired.outcome}"]


def test_two_schedulers_on_one_database_fire_each_due_time_once(
    any_world: World, second_store: Store
) -> None:
    names = [f"s{i:02d}" for i in range(50)]
    for name in names:
        any_world.schedule(name, catchup="all")
    other = Launcher(second_store, any_world.experiment_id)
    clock = Clock(T0 + HOUR + 5)
    schedulers = [
        Scheduler(any_world.store, any_world.launch, clock=clock),
        Scheduler(second_store, other, clock=clock),
    ]

    def ticks(scheduler: Scheduler) -> Callable[[], list[Fired]]:
        return lambda: [f for _ in range(3) for f in scheduler.tick()]

    fired = [f for got in run_in_threads([ticks(s) for s in schedulers]) for f in got]

    assert sorted((f.schedule, f.due_at, f.outcome) for f in fired) == [
        (name, T0 + HOUR, "started") for name in names
    ]
    calls = any_world.launch.calls + other.calls
    assert sorted((c.cause["schedule"], c.cause["due_at"]) for c in calls) == [
        (name, T0 + HOUR) for name in names
    ]
    runs = any_world.store.runs.list_runs(any_world.project_id, limit=1000)
    assert len(runs) == 50
    for s in any_world.store.automation.list_schedules():
        [fire] = any_world.store.automation.list_fires(s.id)
        assert (fire.due_at, fire.outcome) == (T0 + HOUR, "started")
        assert fire.run_id in {r.id for r in runs}
        assert s.handled_until == T0 + HOUR


# -- triggers: pure parts -----------------------------------------------------------------

PAYLOAD = {
    "model": "churn",
    "version": 3,
    "ref": "churn@3",
    "metrics": {"accuracy": 0.91},
    "items": [{"name": "a"}, {"name": "b"}],
    "tags": ["x", "y"],
}


def a_trigger(**options: Any) -> TriggerRecord:
    record, _ = new_trigger(
        project_id="p", name="t", kind="model.registered", pipeline="p", user="me", **options
    )
    return record


def test_render_params_takes_event_fields_and_keeps_literals() -> None:
    trigger = a_trigger(
        params={
            "model": "$event.ref",
            "accuracy": "$event.metrics.accuracy",
            "first": "$event.items.0.name",
            "tags": "$event.tags",
            "version": "$event.version",
            "mode": "fast",
        }
    )
    assert render_params(trigger.params, PAYLOAD) == {
        "model": "churn@3",
        "accuracy": "0.91",
        "first": "a",
        "tags": '["x", "y"]',
        "version": "3",
        "mode": "fast",
    }


def test_render_params_names_a_missing_field() -> None:
    trigger = a_trigger(params={"source": "$event.metrics.auc"})
    with pytest.raises(InvalidInputError) as caught:
        render_params(trigger.params, PAYLOAD)
    assert "'metrics.auc'" in caught.value.message and "'source'" in caught.value.message


def test_lookup_and_filters_follow_dotted_paths() -> None:
    assert lookup(PAYLOAD, "metrics.accuracy") == 0.91
    assert lookup(PAYLOAD, "items.1.name") == "b"
    assert lookup(PAYLOAD, "items.2.name") is None
    assert lookup(PAYLOAD, "metrics.accuracy.deeper") is None
    assert lookup(PAYLOAD, "nope") is None

    assert matches(a_trigger().filter, PAYLOAD)  # no filter: everything
    assert matches(a_trigger(filter={"model": "churn", "metrics.accuracy": "0.91"}).filter, PAYLOAD)
    assert matches(a_trigger(filter={"version": "3", "items.0.name": "a"}).filter, PAYLOAD)
    assert not matches(a_trigger(filter={"model": "fraud"}).filter, PAYLOAD)
    assert not matches(a_trigger(filter={"model": "churn", "items.1.name": "a"}).filter, PAYLOAD)
    assert not matches(a_trigger(filter={"metrics.auc": "0.5"}).filter, PAYLOAD)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"name": "has space"}, "name:"),
        ({"name": "-leading"}, "name:"),
        ({"kind": "cron"}, "kind:"),
        ({"params": {"x": "$payload.a"}}, "params.x:"),
    ],
)
def test_new_trigger_refuses_bad_options(options: dict[str, Any], field: str) -> None:
    values: dict[str, Any] = {"name": "t", "kind": "manual", **options}
    with pytest.raises(InvalidInputError) as caught:
        new_trigger(project_id="p", pipeline="p", user="me", **values)
    assert caught.value.message.startswith(field)


def test_only_a_webhook_trigger_gets_a_secret() -> None:
    hook, secret = new_trigger(
        project_id="p", name="hook", kind="webhook", pipeline="p", user="me", now=T0
    )
    assert secret is not None and secret.startswith("whsec_") and hook.has_secret
    assert hook.created_at == T0 and hook.enabled
    manual, none = new_trigger(project_id="p", name="m", kind="manual", pipeline="p", user="me")
    assert none is None and not manual.has_secret


SECRET = "whsec_test"
BODY = b'{"model": "churn"}'
NOW = 1_800_000_000.0
STAMP = str(int(NOW))
OLD = str(int(NOW - TOLERANCE_SECONDS - 1))
AHEAD = str(int(NOW + TOLERANCE_SECONDS + 1))


def test_verify_accepts_a_good_signature() -> None:
    for sent in (NOW, NOW - TOLERANCE_SECONDS, NOW + TOLERANCE_SECONDS):
        stamp = str(int(sent))
        verify(SECRET, stamp, sign(SECRET, stamp, BODY), BODY, NOW)
    signature = sign(SECRET, STAMP, BODY)
    assert signature.startswith("sha256=") and len(signature) == len("sha256=") + 64
    verify(SECRET, STAMP, signature + "\n", BODY, NOW)  # header whitespace


@pytest.mark.parametrize(
    ("timestamp", "signature", "body", "says"),
    [
        pytest.param(
            STAMP, sign(SECRET, STAMP, BODY), b"{}", "not signed with the secret", id="body"
        ),
        pytest.param(
            STAMP, sign("whsec_other", STAMP, BODY), BODY, "not signed with the secret", id="secret"
        ),
        pytest.param(
            OLD, sign(SECRET, STAMP, BODY), BODY, "not signed with the secret", id="other-stamp"
        ),
        pytest.param(None, sign(SECRET, STAMP, BODY), BODY, "no X-Treadle", id="no-timestamp"),
        pytest.param(STAMP, None, BODY, "no X-Treadle", id="no-signature"),
        pytest.param(STAMP, "", BODY, "no X-Treadle", id="empty-signature"),
        pytest.param(OLD, sign(SECRET, OLD, BODY), BODY, "away from the server", id="old"),
        pytest.param(AHEAD, sign(SECRET, AHEAD, BODY), BODY, "away from the server", id="ahead"),
        pytest.param("yesterday", "sha256=00", BODY, "not a Unix time", id="not-a-time"),
    ],
)
def test_verify_refuses(
    timestamp: str | None, signature: str | None, body: bytes, says: str
) -> None:
    with pytest.raises(AccessError) as caught:
        verify(SECRET, timestamp, signature, body, NOW)
    assert says in caught.value.message


# -- the dispatcher ---------------------------------------------------------------------


def test_observe_records_only_kinds_some_enabled_trigger_watches(world: World) -> None:
    clock = Clock(T0)
    dispatcher = Dispatcher(world.store, world.launch, clock)
    world.finished_run(RunState.SUCCEEDED, T0 + 10)
    clock.now = T0 + 20
    assert dispatcher.observe() == 0

    trigger = world.trigger("off", "run.finished", T0 - 100)
    world.store.automation.set_enabled(trigger.id, False)
    clock.now = T0 + 30
    assert Dispatcher(world.store, world.launch, clock).observe() == 0
    assert world.store.automation.list_events(world.project_id) == []

    world.store.automation.set_enabled(trigger.id, True)
    assert Dispatcher(world.store, world.launch, clock).observe() == 1


def test_a_finished_run_fires_a_trigger_made_before_it_once(world: World) -> None:
    clock = Clock(T0)
    dispatcher = Dispatcher(world.store, world.launch, clock)
    before = world.finished_run(RunState.SUCCEEDED, T0 + 10)
    trigger = world.trigger(
        "after-success",
        "run.finished",
        T0 + 20,
        params={"upstream": "$event.run_id", "state": "$event.state"},
        filter={"state": "SUCCEEDED"},
    )
    after = world.finished_run(RunState.SUCCEEDED, T0 + 30)

    clock.now = T0 + 40
    assert dispatcher.observe() == 2  # both recorded, at the times the runs ended
    events = world.store.automation.list_events(world.project_id, "run.finished")
    assert [(e.key, e.created_at) for e in events] == [
        (f"{after.id}:1", T0 + 30),
        (f"{before.id}:1", T0 + 10),
    ]

    [(name, run_id, outcome)] = dispatcher.dispatch()
    assert (name, outcome) == ("after-success", "started")
    [call] = world.launch.calls
    assert call.run_id == run_id
    assert (call.pipeline, call.params, call.user) == (
        "retrain",
        {"upstream": after.id, "state": "SUCCEEDED"},
        "me",
    )
    event = events[0]
    assert call.cause == {
        "kind": "run.finished",
        "trigger": "after-success",
        "trigger_id": trigger.id,
        "event_id": event.id,
        "event_key": f"{after.id}:1",
        "event": event.payload,
    }
    assert event.payload["run_id"] == after.id and event.payload["state"] == "SUCCEEDED"

    assert dispatcher.dispatch() == []
    assert dispatcher.observe() == 0
    assert dispatcher.fire(trigger, event) == ("after-success", None, "already handled")
    [fire] = world.store.automation.list_trigger_fires(trigger.id)
    assert (fire.event_id, fire.run_id, fire.outcome) == (event.id, run_id, "started")
    assert len(world.launch.calls) == 1

    why = explain(world.store.runs.get_run(run_id).cause, event)
    assert why == (
        "trigger 'after-success' acted on a run.finished event: "
        + json.dumps(event.payload, sort_keys=True)
    )


def test_a_filter_mismatch_is_recorded_as_ignored(world: World) -> None:
    clock = Clock(T0)
    dispatcher = Dispatcher(world.store, world.launch, clock)
    trigger = world.trigger("on-success", "run.finished", T0, filter={"state": "SUCCEEDED"})
    world.finished_run(RunState.FAILED, T0 + 10)
    clock.now = T0 + 20
    dispatcher.observe()

    assert dispatcher.dispatch() == [("on-success", None, "ignored")]
    assert dispatcher.dispatch() == []
    [fire] = world.store.automation.list_trigger_fires(trigger.id)
    assert (fire.run_id, fire.outcome) == (None, "ignored: the filter does not match")
    assert world.launch.calls == []


@pytest.mark.parametrize(
    ("params", "raises", "outcome"),
    [
        pytest.param(
            {"source": "$event.missing"},
            None,
            "failed to start: the event has no field 'missing' for parameter 'source'",
            id="missing-field",
        ),
        pytest.param(
            {},
            NotFoundError("no pipeline named 'retrain'"),
            "failed to start: no pipeline named 'retrain'",
            id="launch-error",
        ),
    ],
)
def test_a_trigger_that_cannot_start_records_why(
    world: World, params: dict[str, str], raises: TreadleError | None, outcome: str
) -> None:
    def launch(*args: Any) -> RunRecord:
        if raises is not None:
            raise raises
        return world.launch(*args)

    clock = Clock(T0)
    announced: list[str] = []
    dispatcher = Dispatcher(world.store, launch, clock, announce=announced.append)
    trigger = world.trigger("broken", "run.finished", T0, params=params)
    world.finished_run(RunState.SUCCEEDED, T0 + 10)
    clock.now = T0 + 20
    dispatcher.observe()

    assert dispatcher.dispatch() == [("broken", None, outcome)]
    assert dispatcher.dispatch() == []  # not retried over and over
    assert world.store.automation.list_trigger_fires(trigger.id)[0].outcome == outcome
    assert announced == [f"trigger broken: {outcome}"]
    assert world.launch.calls == []


def test_a_registered_model_version_fires_a_matching_trigger(
    world: World, settings: Settings
) -> None:
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression

    from treadle.registry import register_model

    trigger = world.trigger(
        "deploy-churn",
        "model.registered",
        time.time() - 1,
        params={"model": "$event.ref", "accuracy": "$event.metrics.accuracy"},
        filter={"model": "churn"},
    )
    dispatcher = Dispatcher(world.store, world.launch)
    X = [[0.0, 1.0], [1.0, 0.0], [0.2, 0.9], [0.9, 0.1]]
    model = LogisticRegression().fit(X, [0, 1, 0, 1])
    version = register_model(model, "churn", metrics={"accuracy": 0.75}, store=world.store)
    register_model(model, "fraud", store=world.store)

    assert dispatcher.observe() == 2
    outcomes = dispatcher.dispatch()
    assert sorted(o for _, _, o in outcomes) == ["ignored", "started"]
    [call] = world.launch.calls
    assert call.params == {"model": f"churn@{version.version}", "accuracy": "0.75"}
    assert call.cause["kind"] == "model.registered"
    event = world.store.automation.get_event(call.cause["event_id"])
    assert event.key == version.id and event.created_at == version.created_at
    assert event.payload["version_id"] == version.id

    other_store = open_store(settings)
    try:
        other = Dispatcher(other_store, world.launch)
        assert other.observe() == 0
        assert other.dispatch() == []
        assert other.fire(trigger, event) == ("deploy-churn", None, "already handled")
    finally:
        other_store.close()
    assert dispatcher.dispatch() == []
    assert len(world.launch.calls) == 1


def test_two_dispatchers_on_one_database_fire_once(any_world: World, second_store: Store) -> None:
    trigger = any_world.trigger("downstream", "run.finished", T0)
    finished = any_world.finished_run(RunState.SUCCEEDED, T0 + 10)
    other = Launcher(second_store, any_world.experiment_id)
    clock = Clock(T0)
    dispatchers = [
        Dispatcher(any_world.store, any_world.launch, clock),
        Dispatcher(second_store, other, clock),
    ]
    clock.now = T0 + 20
    recorded = run_in_threads([d.observe for d in dispatchers])
    assert sorted(recorded) == [0, 1]  # the event is recorded once

    # both see the event pending, then both act on it at once: one claim wins
    pending = [d.store.automation.pending_events(trigger) for d in dispatchers]
    assert [[e.key for e in p] for p in pending] == [[f"{finished.id}:1"]] * 2
    results = run_in_threads(
        [
            functools.partial(lambda d, p: [d.fire(trigger, e) for e in p], d, p)
            for d, p in zip(dispatchers, pending, strict=True)
        ]
    )
    outcomes = sorted(r[2] for got in results for r in got)
    assert outcomes == ["already handled", "started"]
    assert [d.dispatch() for d in dispatchers] == [[], []]

    calls = any_world.launch.calls + other.calls
    assert [c.cause["event_key"] for c in calls] == [f"{finished.id}:1"]
    [fire] = any_world.store.automation.list_trigger_fires(trigger.id)
    assert (fire.run_id, fire.outcome) == (calls[0].run_id, "started")


def test_store_records_each_event_once(any_world: World) -> None:
    automation = any_world.store.automation
    trigger = any_world.trigger("manual-one", "manual", T0)
    with pytest.raises(ConflictError):
        any_world.trigger("manual-one", "manual", T0)
    assert automation.get_trigger(any_world.project_id, "manual-one") == trigger
    assert automation.trigger_secret(trigger.id) is None

    hook = any_world.trigger("hook", "webhook", T0)
    assert hook.has_secret
    assert (automation.trigger_secret(hook.id) or "").startswith("whsec_")

    event, new = automation.record_event(any_world.project_id, "manual", "k1", {"a": 1}, T0 + 1)
    again, new_again = automation.record_event(
        any_world.project_id, "manual", "k1", {"a": 2}, T0 + 2
    )
    assert (new, new_again) == (True, False)
    assert (
        again
        == event
        == EventRecord(event.id, any_world.project_id, "manual", "k1", {"a": 1}, T0 + 1)
    )
    assert automation.pending_events(trigger) == [event]
    fire_id = automation.claim_trigger_fire(trigger.id, event.id, T0 + 3)
    assert fire_id is not None
    assert automation.claim_trigger_fire(trigger.id, event.id, T0 + 4) is None
    assert automation.pending_events(trigger) == []

    automation.delete_trigger(trigger.id)
    with pytest.raises(NotFoundError):
        automation.get_trigger_by_id(trigger.id)
    assert automation.list_trigger_fires(trigger.id) == []


# -- why ----------------------------------------------------------------------------------


def test_explain_says_why_a_run_happened() -> None:
    assert explain(None, None) == "it was started before runs recorded why"
    assert explain({"kind": "manual", "by": "alice"}, None) == "alice started it"
    assert explain({"kind": "manual"}, None) == "someone started it"
    external = {"kind": "external", "executor": "kfp", "external_id": "r-1", "pipeline": "train"}
    assert explain({**external, "by": "ci"}, None) == (
        "kfp job 'r-1' of pipeline 'train' recorded it (as ci)"
    )
    assert explain({"kind": "kubeflow", "job": "j-9", "pipeline": "train"}, None) == (
        "Kubeflow Pipelines job 'j-9' of pipeline 'train' ran it"
    )

    due = at(BERLIN, 2026, 10, 25, 2, 30)
    schedule = {
        "kind": "schedule",
        "schedule": "nightly",
        "cron": "30 2 * * *",
        "timezone": "Europe/Berlin",
        "due_at": due,
    }
    shown = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(due))
    assert explain(schedule, None) == (
        f"schedule 'nightly' (30 2 * * * Europe/Berlin) was due at {shown}"
    )

    trigger_cause = {
        "kind": "model.registered",
        "trigger": "deploy",
        "event_id": "e1",
        "event": {"model": "churn", "version": 2},
    }
    assert explain(trigger_cause, None) == (
        'trigger \'deploy\' acted on a model.registered event: {"model": "churn", "version": 2}'
    )
    event = EventRecord("e1", "p", "model.registered", "v", {"ref": "churn@2"}, T0)
    assert explain(trigger_cause, event) == (
        'trigger \'deploy\' acted on a model.registered event: {"ref": "churn@2"}'
    )
    manual_trigger = {"kind": "manual", "trigger": "kick", "event": {}}
    assert explain(manual_trigger, None) == "trigger 'kick' acted on a manual event: {}"
