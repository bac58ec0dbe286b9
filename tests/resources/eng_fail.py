"""A pipeline whose middle step raises, with a sibling branch that does not."""

from __future__ import annotations

import sys

from treadle import pipeline, step


@step
def source() -> int:
    return 7


@step
def explode(x: int) -> int:
    print("explode: about to fail")
    print("explode: a warning on stderr", file=sys.stderr)
    raise ValueError(f"bad value {x}")


@step
def downstream(x: int) -> int:
    return x + 1


@step
def side(x: int) -> int:
    return x * 3


@pipeline
def failing() -> None:
    value = source()
    downstream(explode(value))
    side(value)


@step
def wrong_arity() -> tuple[int, int]:
    return 1  # type: ignore[return-value]


@pipeline
def arity() -> None:
    wrong_arity()
