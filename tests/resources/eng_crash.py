"""A step whose process dies without reporting (only for the process executor)."""

from __future__ import annotations

import os

from treadle import pipeline, step


@step
def before() -> int:
    return 1


@step
def die(x: int, code: int) -> int:
    os._exit(code)


@step
def survivor(x: int) -> int:
    return x + 1


@pipeline
def crashing(code: int = 3) -> None:
    value = before()
    die(value, code)
    survivor(value)
