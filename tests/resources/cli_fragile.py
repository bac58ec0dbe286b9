"""A three-step chain whose middle step fails until a marker file exists.

The marker's path comes from the `marker` parameter, or from TREADLE_TEST_MARKER when
the parameter is empty, so a test can fail a run, create the file, and resume it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from treadle import pipeline, step


@step
def prepare(n: int) -> list[int]:
    print(f"prepare: making {n} numbers")
    return list(range(1, n + 1))


@step
def fragile(values: list[int], marker: str) -> int:
    path = Path(marker or os.environ.get("TREADLE_TEST_MARKER", ""))
    print(f"fragile: looking for the marker at {path}")
    print("fragile: a note on stderr", file=sys.stderr)
    if not path.name or not path.is_file():
        raise RuntimeError(f"marker file {path} is missing")
    return sum(values)


@step
def report(total: int) -> str:
    return f"total={total}"


@pipeline
def fragile_chain(n: int = 4, marker: str = "") -> None:
    report(fragile(prepare(n), marker))
