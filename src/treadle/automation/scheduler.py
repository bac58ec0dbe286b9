"""The scheduler: cron schedules become runs, each due time once.

`tick()` looks at every schedule against the clock it was given (tests inject one that
jumps). Due times since the schedule's `handled_until` are fired as its catch-up policy
says; each fire is claimed in the database first, so two schedulers on one database
start one run per due time between them. A clock that goes back fires nothing until it
passes what was handled.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from treadle.automation import cron
from treadle.errors import describe
from treadle.store.records import RunRecord, ScheduleRecord, new_id

GRACE_SECONDS = 60.0
"""Under `catchup=skip`, a due time later than this is a missed one, let go."""
CATCHUP = ("skip", "once", "all")
CONCURRENCY = ("allow", "forbid", "replace")


class Launch(Protocol):
    def __call__(
        self,
        project_id: str,
        pipeline: str,
        params: dict[str, str],
        cause: dict[str, Any],
        user: str,
    ) -> RunRecord: ...


Cancel = Callable[[str], bool]
"""Ask a run (by id) to stop; False if it is not running here."""


@dataclasses.dataclass(frozen=True)
class Fired:
    schedule: str
    due_at: float
    run_id: str | None
    outcome: str


def new_schedule(
    *,
    project_id: str,
    name: str,
    pipeline: str,
    cron_expression: str,
    timezone: str = "UTC",
    params: dict[str, str] | None = None,
    catchup: str = "skip",
    max_catchup: int = 10,
    concurrency: str = "allow",
    user: str,
    now: float | None = None,
) -> ScheduleRecord:
    """A checked schedule record, due from `now` on."""
    from treadle.errors import InvalidInputError

    cron.check(cron_expression, timezone)
    if catchup not in CATCHUP:
        raise InvalidInputError(f"catchup: {catchup!r} is not one of {', '.join(CATCHUP)}")
    if concurrency not in CONCURRENCY:
        raise InvalidInputError(
            f"concurrency: {concurrency!r} is not one of {', '.join(CONCURRENCY)}"
        )
    if not 1 <= max_catchup <= 1000:
        raise InvalidInputError(f"max_catchup: {max_catchup} is not between 1 and 1000")
    at = time.time() if now is None else now
    return ScheduleRecord(
        id=new_id(),
        project_id=project_id,
        name=name,
        pipeline=pipeline,
        cron=cron_expression,
        timezone=timezone,
        params=dict(params or {}),
        catchup=catchup,
        max_catchup=max_catchup,
        concurrency=concurrency,
        paused=False,
        handled_until=at,
        created_by=user,
        created_at=at,
    )


class Scheduler:
    def __init__(
        self,
        store: Any,
        launch: Launch,
        cancel: Cancel | None = None,
        clock: Callable[[], float] = time.time,
        announce: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.store = store
        self.launch = launch
        self.cancel = cancel or (lambda run_id: False)
        self.clock = clock
        self.announce = announce
        # schedule id -> (handled_until, cron, tz, next due): cron is not re-walked every tick
        self._next: dict[str, tuple[float, str, str, float]] = {}

    def _next_due(self, s: ScheduleRecord) -> float:
        cached = self._next.get(s.id)
        if cached is not None and cached[:3] == (s.handled_until, s.cron, s.timezone):
            return cached[3]
        due = cron.next_due(s.cron, s.timezone, s.handled_until)
        self._next[s.id] = (s.handled_until, s.cron, s.timezone, due)
        return due

    def tick(self) -> list[Fired]:
        """Fire what is due now; returns what this scheduler fired."""
        now = self.clock()
        fired: list[Fired] = []
        for s in self.store.automation.list_schedules():
            if s.paused:
                continue
            try:
                if self._next_due(s) > now:
                    continue
                fired += self._handle(s, now)
            except Exception as exc:  # one bad schedule does not stop the others
                said = describe(exc)
                self.announce(f"schedule {s.name}: {said}")
        return fired

    def _handle(self, s: ScheduleRecord, now: float) -> list[Fired]:
        dues = list(cron.due_times(s.cron, s.timezone, s.handled_until, now))
        if not dues:
            return []
        if s.catchup == "all":
            chosen = dues[-s.max_catchup :]
        elif s.catchup == "once" or now - dues[-1] <= GRACE_SECONDS:
            chosen = dues[-1:]
        else:
            chosen = []  # skip: the newest due time is already too late
        fired = [f for due in chosen if (f := self._fire(s, due, now)) is not None]
        self.store.automation.advance(s.id, dues[-1])
        return fired

    def _fire(self, s: ScheduleRecord, due: float, now: float) -> Fired | None:
        automation = self.store.automation
        fire_id = automation.claim_fire(s.id, due, self.clock())  # when it really fired
        if fire_id is None:
            return None  # another scheduler fired this due time
        running = automation.running_runs(s.id) if s.concurrency != "allow" else []
        if running and s.concurrency == "forbid":
            outcome = f"skipped: run {running[0][:8]} of this schedule is still running"
            automation.finish_fire(fire_id, None, outcome)
            return Fired(s.name, due, None, outcome)
        for run_id in running:
            self.cancel(run_id)
        cause = {
            "kind": "schedule",
            "schedule": s.name,
            "schedule_id": s.id,
            "cron": s.cron,
            "timezone": s.timezone,
            "due_at": due,
            "fire_id": fire_id,
        }
        if running:
            cause["replaced"] = running
        try:
            run = self.launch(s.project_id, s.pipeline, dict(s.params), cause, s.created_by)
        except Exception as exc:  # the pipeline's code may raise anything on import
            said = describe(exc)
            outcome = f"failed to start: {said}"
            automation.finish_fire(fire_id, None, outcome)
            self.announce(f"schedule {s.name}: {outcome}")
            return Fired(s.name, due, None, outcome)
        automation.finish_fire(fire_id, run.id, "started")
        return Fired(s.name, due, run.id, "started")

    def run_forever(self, stop: threading.Event, every: float = 0.2) -> None:
        while not stop.wait(every):
            try:
                self.tick()
            except Exception as exc:  # the loop outlives a bad tick; the next one retries
                self.announce(f"scheduler: {type(exc).__name__}: {exc}")
