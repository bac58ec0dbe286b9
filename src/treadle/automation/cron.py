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


def _by_wall_clock(expression: str) -> bool:
    """Whether the schedule names hours of the day (so a repeated hour runs it once)."""
    hour = expression.split()[1]
    return hour != "*" and not hour.startswith("*/")


def due_times(expression: str, timezone: str, after: float, until: float) -> Iterator[float]:
    """Due times t with after < t <= until, oldest first (at most MAX_SCAN of them)."""
    from croniter import croniter

    tz = zone(timezone)
    start = dt.datetime.fromtimestamp(after, tz)
    walk = croniter(expression, start)
    wall_clock = _by_wall_clock(expression)
    # `after` is usually the last due time handled: its wall-clock time counts as seen
    seen_wall: dt.datetime | None = start.replace(tzinfo=None)
    for _ in range(MAX_SCAN):
        moment: dt.datetime = walk.get_next(dt.datetime)
        at = moment.timestamp()
        if at > until:
            return
        if at <= after:
            continue
        local = moment.replace(tzinfo=None)
        if wall_clock and local == seen_wall:
            continue  # the second 02:30 of the night the clocks go back
        seen_wall = local
        yield at


def next_due(expression: str, timezone: str, after: float) -> float:
    """The first due time after `after`."""
    for at in due_times(expression, timezone, after, after + 400 * 86400):
        return at
    raise InvalidInputError(f"cron: {expression!r} is never due within a year")
