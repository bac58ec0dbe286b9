"""A pipeline whose second step waits for a file to appear: it can be cancelled while
it waits, and resumed once the file is there."""

from __future__ import annotations

import time
from pathlib import Path

from treadle import pipeline, step


@step
def prepare(n: int = 3) -> list[int]:
    return list(range(n))


@step(cache=False)
def wait_for(items: list[int], marker: str = "", seconds: float = 120.0) -> int:
    deadline = time.monotonic() + seconds
    while not Path(marker).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{marker} did not appear")
        time.sleep(0.05)
    return sum(items)


@pipeline
def waiting(n: int = 3, marker: str = "/nonexistent") -> None:
    wait_for(prepare(n), marker)
