"""A module with a step but no @pipeline, for the error a CLI user meets naming it."""

from __future__ import annotations

from treadle import step


@step
def lonely(x: int) -> int:
    return x + 1
