"""treadle: the whole machine-learning loop on one machine with one command.

from treadle import step, pipeline, log_metric

@step
def load(rows: int = 500) -> pd.DataFrame: ...

@pipeline
def training(rows: int = 500):
    load(rows)

run = training(rows=100)     # runs it, cached and recorded; returns a Run
"""

from typing import TYPE_CHECKING, Any

from treadle.dsl import Resources, StepOptions, step, unmapped
from treadle.engine import RunOptions, pipeline, resume_run, run_pipeline
from treadle.errors import TreadleError
from treadle.registry import load_model, promote, register_model, set_alias
from treadle.tracking import (
    Run,
    active_run_id,
    log_artifact,
    log_metric,
    log_metrics,
    log_param,
    log_params,
    start_run,
)
from treadle.types import Dataset, Metrics, Model, Report, RunState, StepState

if TYPE_CHECKING:
    from treadle.client import Client

__version__ = "0.1.0"

__all__ = [
    "Client",
    "Dataset",
    "Metrics",
    "Model",
    "Report",
    "Resources",
    "Run",
    "RunOptions",
    "RunState",
    "StepOptions",
    "StepState",
    "TreadleError",
    "active_run_id",
    "load_model",
    "log_artifact",
    "log_metric",
    "log_metrics",
    "log_param",
    "log_params",
    "pipeline",
    "promote",
    "register_model",
    "resume_run",
    "run_pipeline",
    "set_alias",
    "start_run",
    "step",
    "unmapped",
]


def __getattr__(name: str) -> Any:
    # the client (and httpx under it) loads on first use: most programs never talk to a server
    if name == "Client":
        from treadle.client import Client

        return Client
    raise AttributeError(f"module 'treadle' has no attribute {name!r}")
