"""The benchmark pipelines: trivial steps, so what is timed is treadle itself.

`linear10` is a chain of 10 steps; `fanout50` is one step that makes a list of 50
ints, a mapped step run once per item, and one join step (52 step runs).
"""

from __future__ import annotations

from treadle import pipeline, step

LINEAR_STEPS = 10
FANOUT_ITEMS = 50


@step
def inc(x: int) -> int:
    return x + 1


@step
def numbers(n: int = FANOUT_ITEMS) -> list[int]:
    return list(range(n))


@step
def total(values: list[int]) -> int:
    return sum(values)


@pipeline
def linear10(start: int = 0) -> None:
    value = inc(start)
    for _ in range(LINEAR_STEPS - 1):
        value = inc(value)


@pipeline
def fanout50(n: int = FANOUT_ITEMS) -> None:
    total(inc.map(x=numbers(n)))
