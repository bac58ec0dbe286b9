"""Pipelines for the Kubeflow Pipelines compiler tests: every parameter type, fan-outs of
each kind, a join of several outputs, step options, metrics."""

from __future__ import annotations

from typing import NamedTuple

from treadle import Dataset, Metrics, Model, pipeline, step
from treadle.dsl import Resources, StepOptions


@step
def numbers(n: int) -> list[int]:
    return list(range(1, n + 1))


@step(retries=2, cache=False, resources={"cpu": 0.5, "memory": "256Mi"}, timeout=60)
def square(x: int) -> int:
    return x * x


@step
def add(x: int, y: int) -> int:
    return x + y


@step
def total(values: list[int]) -> Metrics:
    return {"total": float(sum(values)), "count": float(len(values))}


@pipeline
def fan(n: int = 4) -> None:
    """Map over an upstream list output, then join."""
    total(square.map(x=numbers(n)))


@pipeline
def fan_constant() -> None:
    total(square.map(x=[2, 3, 4]))


@pipeline
def fan_param(xs: list[int] = [1, 2, 3]) -> None:  # noqa: B006 - a default list, never mutated
    total(square.map(x=xs))


@pipeline
def fan_zip(n: int = 3) -> None:
    """Two lists zipped: an upstream output and a constant of the same length."""
    total(add.map(x=numbers(n), y=[10, 20, 30]))


@step
def join(values: list[int]) -> int:
    return sum(values)


@pipeline
def collect(a: int = 2) -> None:
    """A list made of several steps' outputs and a constant."""
    join([square(a), square(3), 100])


class Parts(NamedTuple):
    low: list[int]
    high: list[int]


@step
def split(values: list[int], pivot: int) -> Parts:
    return Parts([v for v in values if v <= pivot], [v for v in values if v > pivot])


@step
def describe(
    low: list[int],
    high: list[int],
    rate: float,
    label: str,
    verbose: bool,
    weights: list[float],
    config: dict[str, int],
    note: str | None,
) -> dict[str, object]:
    return {
        "low": low,
        "high": high,
        "rate": rate,
        "label": label,
        "verbose": verbose,
        "weights": weights,
        "config": config,
        "note": note,
    }


@pipeline
def every_type(
    n: int = 5,
    pivot: int = 2,
    rate: float = 0.25,
    label: str = "run",
    verbose: bool = False,
    weights: list[float] = [0.5, 1.5],  # noqa: B006 - never mutated
    config: dict[str, int] = {"depth": 3},  # noqa: B006 - never mutated
    note: str | None = None,
    repeats: int = 2,
) -> None:
    """`repeats` shapes the graph, `note` is None; the others reach a step as they are."""
    values = numbers(n)
    for _ in range(repeats):
        low, high = split(values, pivot)
    describe(low, high, rate, label, verbose, weights, config, note)


@step
def make_table(rows: int) -> Dataset:
    return [[i, i * 2] for i in range(rows)]


@step(options=StepOptions(resources=Resources(gpu=1), retries=1, retry_delay=0.5))
def fit(table: Dataset) -> Model:
    return {"weights": [len(table)]}


@step
def score(model: Model, table: Dataset) -> Metrics:
    return {"rows": float(len(table)), "weight": float(model["weights"][0])}


@pipeline
def typed(rows: int = 4) -> None:
    """Dataset, Model and Metrics artifacts."""
    table = make_table(rows)
    score(fit(table), table)
