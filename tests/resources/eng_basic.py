"""Small pipelines for the engine tests: a chain, a fan-out and multi-output steps."""

from __future__ import annotations

import sys
from typing import NamedTuple

from treadle import pipeline, step


@step
def load(n: int) -> list[int]:
    print(f"load: making {n} numbers")
    print("load: a note on stderr", file=sys.stderr)
    return list(range(1, n + 1))


@step
def scale(values: list[int], factor: int) -> list[int]:
    return [v * factor for v in values]


@step
def summarize(values: list[int], offset: int) -> int:
    return sum(values) + offset


@pipeline
def linear(n: int = 3, factor: int = 2, offset: int = 0) -> None:
    summarize(scale(load(n), factor), offset)


@step
def square(x: int) -> int:
    print(f"square of {x}")
    return x * x


@step
def total(values: list[int]) -> int:
    return sum(values)


@pipeline
def fan(n: int = 4) -> None:
    total(square.map(x=load(n)))


@pipeline
def fan_literal() -> None:
    total(square.map(x=[2, 3, 4]))


class Split(NamedTuple):
    low: list[int]
    high: list[int]


@step
def split(values: list[int], pivot: int) -> Split:
    return Split([v for v in values if v <= pivot], [v for v in values if v > pivot])


@step
def stats(values: list[int]) -> tuple[int, float]:
    return len(values), sum(values) / len(values)


@step
def describe(count: int, mean: float, low: list[int]) -> str:
    return f"{count} values, mean {mean}, {len(low)} below"


@pipeline
def multi(n: int = 6, pivot: int = 2) -> None:
    low, high = split(load(n), pivot)
    count, mean = stats(high)
    describe(count, mean, low)
