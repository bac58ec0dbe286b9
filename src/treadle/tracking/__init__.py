"""Experiment tracking: params, metrics and artifacts of the active run."""

from treadle.tracking.api import (
    active_run_id,
    log_artifact,
    log_metric,
    log_metrics,
    log_param,
    log_params,
    start_run,
)
from treadle.tracking.context import ActiveRun
from treadle.tracking.run import Run

__all__ = [
    "ActiveRun",
    "Run",
    "active_run_id",
    "log_artifact",
    "log_metric",
    "log_metrics",
    "log_param",
    "log_params",
    "start_run",
]
