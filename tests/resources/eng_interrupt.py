"""Two steps: a quick one, then one that sleeps as long as a file says (for Ctrl-C tests)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from treadle import pipeline, step


@step
def quick(workdir: str) -> int:
    with open(Path(workdir) / "quick.count", "a") as f:
        f.write("ran\n")
    return 1


@step
def sleepy(x: int, workdir: str) -> int:
    (Path(workdir) / "sleepy.pid").write_text(str(os.getpid()))
    seconds = float((Path(workdir) / "sleep_seconds").read_text())
    time.sleep(seconds)
    return x + 1


@pipeline
def interruptible(workdir: str = "") -> None:
    sleepy(quick(workdir), workdir)
