"""What a run reports while it goes, for progress displays and logs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class Event:
    """`kind` is one of: run_started, step_started, step_finished, step_cached,
    step_reused, step_retrying, step_failed, step_skipped, run_finished, notice."""

    kind: str
    run_id: str
    unit: str | None = None
    node: str | None = None
    attempt: int = 1
    duration: float | None = None
    message: str | None = None
    total: int | None = None


EventSink = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The default sink: nobody is watching."""
