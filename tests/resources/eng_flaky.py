"""Steps that fail their first attempts, counted in a file passed as a parameter."""

from __future__ import annotations

from pathlib import Path

from treadle import StepOptions, pipeline, step


def _attempt(counter: str, fail_times: int) -> int:
    path = Path(counter)
    seen = int(path.read_text()) if path.exists() else 0
    path.write_text(str(seen + 1))
    if seen < fail_times:
        raise RuntimeError(f"flaky failure {seen + 1} of {fail_times}")
    return seen + 1


@step(retries=2, options=StepOptions(retry_delay=0.2, retry_backoff=2.0))
def flaky_retry2(counter: str, fail_times: int) -> int:
    return _attempt(counter, fail_times)


@step(retries=1, options=StepOptions(retry_delay=0.01))
def flaky_retry1(counter: str, fail_times: int) -> int:
    return _attempt(counter, fail_times)


@pipeline
def retry_twice(counter: str = "", fail_times: int = 2) -> None:
    flaky_retry2(counter, fail_times)


@pipeline
def retry_once(counter: str = "", fail_times: int = 2) -> None:
    flaky_retry1(counter, fail_times)


def _count_execution(path: str) -> None:
    with open(path, "a") as f:
        f.write("ran\n")


@step
def prepare(counter: str) -> int:
    _count_execution(counter + ".prepare")
    return 10


@step
def shaky(x: int, counter: str, fail_times: int) -> int:
    _attempt(counter, fail_times)
    return x + 1


@step
def finish(x: int) -> int:
    return x * 2


@pipeline
def resumable(counter: str = "", fail_times: int = 1) -> None:
    finish(shaky(prepare(counter), counter, fail_times))


@step
def fragile_item(x: int, workdir: str, bad: int) -> int:
    marker = Path(workdir) / f"item-{x}"
    _count_execution(str(marker))
    if x == bad and marker.read_text().count("ran") == 1:
        raise RuntimeError(f"item {x} fails on its first run")
    return x * 10


@step
def add_up(values: list[int]) -> int:
    return sum(values)


@pipeline
def fan_resume(workdir: str = "", bad: int = 2) -> None:
    add_up(fragile_item.map(x=[1, 2, 3], workdir=workdir, bad=bad))
