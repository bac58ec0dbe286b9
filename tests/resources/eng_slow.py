"""A step that sleeps past its timeout, recording its process id and when it wakes."""

from __future__ import annotations

import os
import time
from pathlib import Path

from treadle import pipeline, step


@step(timeout=1.0)
def nap(seconds: float, pid_file: str) -> float:
    if pid_file:
        Path(pid_file).write_text(str(os.getpid()))
    time.sleep(seconds)
    if pid_file:
        Path(pid_file + ".done").write_text("slept")
    return seconds


@step
def after_nap(x: float) -> float:
    return x


@pipeline
def napping(seconds: float = 2.0, pid_file: str = "") -> None:
    after_nap(nap(seconds, pid_file))
