"""Execution: the runner, executors, and the `pipeline` decorator that runs on call."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar, overload

from treadle.config import load_settings
from treadle.dsl import Pipeline
from treadle.dsl import pipeline as _define_pipeline
from treadle.engine.events import Event
from treadle.engine.loader import find_pipeline, version_pipeline
from treadle.engine.runner import RunOptions, resume_run, run_pipeline
from treadle.store import open_store
from treadle.tracking.run import Run

P = ParamSpec("P")
R = TypeVar("R")


def run_locally(pipeline: Pipeline[Any, Any], params: dict[str, Any]) -> Run:
    """Run a pipeline against the store that the environment names (TREADLE_HOME...)."""
    store = open_store(load_settings())
    return run_pipeline(pipeline, params, store)


@overload
def pipeline(fn: Callable[P, R], /) -> Pipeline[P, R]: ...
@overload
def pipeline(
    *, name: str | None = ..., smoke: Mapping[str, Any] | None = ...
) -> Callable[[Callable[P, R]], Pipeline[P, R]]: ...


def pipeline(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    smoke: Mapping[str, Any] | None = None,
) -> Pipeline[P, R] | Callable[[Callable[P, R]], Pipeline[P, R]]:
    """Make a function a pipeline; calling it runs it and returns a `Run`.

    The body wires steps together; its parameters are the pipeline's parameters.
    `smoke` gives the parameters of a quick run (small data, few iterations) that
    `treadle pipeline build` and `treadle pipeline test` make before packaging.
    """
    define = _define_pipeline(name=name, runner=run_locally, smoke=smoke)
    return define(fn) if fn is not None else define


__all__ = [
    "Event",
    "RunOptions",
    "find_pipeline",
    "pipeline",
    "resume_run",
    "run_locally",
    "run_pipeline",
    "version_pipeline",
]
