"""Steps that report where they ran: the process, the file their code was loaded from,
and the resources Ray gave them."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from treadle import pipeline, step


@step
def meet(x: int, folder: str) -> dict[str, Any]:
    """Wait (30 s at most) until another item has started too: items that do not run at
    the same time fail here."""
    Path(folder, str(x)).write_text(str(os.getpid()))
    deadline = time.monotonic() + 30
    while len(list(Path(folder).iterdir())) < 2:
        if time.monotonic() > deadline:
            raise TimeoutError(f"item {x} ran alone")
        time.sleep(0.02)
    return {"x": x, "pid": os.getpid(), "file": __file__}


@step
def gather(reports: list[dict[str, Any]]) -> int:
    return len(reports)


@pipeline
def spread(n: int = 4, folder: str = "") -> None:
    gather(meet.map(x=list(range(n)), folder=folder))


@step(resources={"cpu": 2, "memory": "64Mi"})
def assigned() -> dict[str, float]:
    import ray

    return dict(ray.get_runtime_context().get_assigned_resources())


@pipeline
def placed() -> None:
    assigned()


@step(resources={"gpu": 1})
def needs_a_gpu() -> int:
    return 1


@pipeline
def on_a_gpu() -> None:
    needs_a_gpu()


@step(resources={"cpu": 2})
def hog(seconds: float, marker: str) -> float:
    Path(marker).write_text("running")
    time.sleep(seconds)
    return seconds


@step(resources={"cpu": 0})
def when_hog_runs(marker: str) -> str:
    deadline = time.monotonic() + 30
    while not Path(marker).exists():
        if time.monotonic() > deadline:
            raise TimeoutError("hog never started")
        time.sleep(0.02)
    return marker


@step(resources={"cpu": 2}, timeout=1.0)
def queued(marker: str) -> str:
    return marker


@pipeline
def crowded(seconds: float = 3.0, marker: str = "") -> None:
    """`queued` needs the two CPUs `hog` holds, so it waits in Ray past its timeout. The
    test has `hog` hold them for 8 s: time enough, on a slow machine too, for Ray to start
    `when_hog_runs`, submit `queued` and time it out after its one second."""
    hog(seconds, marker)
    queued(when_hog_runs(marker))
