"""Independent steps that only finish if they run at the same time (a shared barrier)."""

from __future__ import annotations

import threading
import time

from treadle import pipeline, step

BARRIER = threading.Barrier(2)
WAIT_SECONDS = 10.0


@step
def meet(tag: str) -> str:
    BARRIER.wait(timeout=WAIT_SECONDS)
    return tag


@pipeline
def parallel_meet() -> None:
    meet("a")
    meet("b")


@step
def chatter(tag: str, lines: int) -> int:
    BARRIER.wait(timeout=WAIT_SECONDS)
    for i in range(lines):
        print(f"{tag} line {i}")
        time.sleep(0.001)
    return lines


@pipeline
def parallel_chatter(lines: int = 40) -> None:
    chatter("left", lines)
    chatter("right", lines)
