"""Cron due times in a time zone, with the daylight-saving rules people expect.

Expressions have five fields (minute hour day-of-month month day-of-week) or six, the
sixth giving seconds (`* * * * * */10`: every ten seconds). A schedule at a fixed time
of day (`30 2 * * *`) runs once on the night the clocks go back, though 02:30 happens
twice, and at the first valid minute after the gap on the night they go forward. A
schedule that runs every hour or more often (`*/30 * * * *`) keeps running by real time
through both.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from treadle.errors import InvalidInputError

MAX_SCAN = 100_000
"""Due times looked at in one call at most (a year of minutes is 525,600)."""


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInputError(
            f"timezone: {name!r} is not a time zone", "use an IANA name, e.g. Europe/Berlin or UTC"
        ) from None


def check(expression: str, timezone: str = "UTC") -> None:
    """Refuse an invalid cron expression or time zone, naming which."""
    from croniter import croniter

    zone(timezone)
    fields = expression.split()
    if len(fields) not in (5, 6) or not croniter.is_valid(expression):
        raise InvalidInputError(
            f"cron: {expression!r} is not a cron expression",
            "five fields: minute hour day-of-month month day-of-week, e.g. '*/15 * * * *' "
            "(a sixth gives seconds: '* * * * * */10' is every 10 s)",
        )
    next_due(expression, timezone, dt.datetime.now(dt.UTC).timestamp())  # never due?


def _by_wall_clock(expression: str) -> bool:
    """Whether the schedule names hours of the day (so a repeated hour runs it once)."""
    hour = expression.split()[1]
    return hour != "*" and not hour.startswith("*/")


def due_times(expression: str, timezone: str, after: float, until: float) -> Iterator[float]:
    """Due times t with after < t <= until, oldest first (at most MAX_SCAN of them)."""
    tz = zone(timezone)
    wall_clock = _by_wall_clock(expression)
    # wall-clock times already due before `after` (usually handled) count as seen, so the
    # second 02:30 of the night the clocks go back does not run again in a later call
    seen: set[dt.datetime] = set()
    if wall_clock:
        seen = {_local(at, tz) for at in _walk(expression, tz, after - REPEAT_WINDOW, after)}
        seen.add(_local(after, tz))
    for at in _walk(expression, tz, after, until):
        local = _local(at, tz)
        if wall_clock:
            if local in seen:
                continue  # a wall-clock time the night the clocks went back repeats
            seen.add(local)
        yield at


REPEAT_WINDOW = 3 * 3600.0
"""How far back a repeated wall-clock time can be: clocks go back an hour at most."""


def _local(at: float, tz: ZoneInfo) -> dt.datetime:
    return dt.datetime.fromtimestamp(at, tz).replace(tzinfo=None)


def _walk(expression: str, tz: ZoneInfo, after: float, until: float) -> Iterator[float]:
    from croniter import CroniterError, croniter

    walk = croniter(expression, dt.datetime.fromtimestamp(after, tz))
    for _ in range(MAX_SCAN):
        try:
            moment: dt.datetime = walk.get_next(dt.datetime)
        except CroniterError:
            raise InvalidInputError(f"cron: {expression!r} is never due") from None
        at = moment.timestamp()
        if at > until:
            return
        if at > after:
            yield at


def next_due(expression: str, timezone: str, after: float) -> float:
    """The first due time after `after`."""
    for at in due_times(expression, timezone, after, after + HORIZON):
        return at
    raise InvalidInputError(f"cron: {expression!r} is never due within {HORIZON // 86400:.0f} days")


HORIZON = 5 * 366 * 86400.0
