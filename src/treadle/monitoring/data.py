"""Live data with its labels: what a deployment was asked, joined with the labels that
came back, for retraining on recent data."""

from __future__ import annotations

from typing import Any

from treadle.config import Settings, load_settings
from treadle.monitoring.monitor import (
    INPUT,
    feedback_dir,
    predictions_dir,
    read_feedback,
    read_since,
)
from treadle.tracking.context import active


def labelled(
    deployment: str,
    since: float = 0.0,
    until: float | None = None,
    *,
    label: str = "label",
    project: str | None = None,
    settings: Settings | None = None,
) -> Any:
    """The inputs a deployment's model servers logged between `since` and `until` (Unix
    seconds) that have a label, as a DataFrame with the input columns and `label`.
    The project defaults to the current one (TREADLE_PROJECT)."""
    import time

    import pandas as pd

    if settings is None:  # inside a run: the home and project the run is recorded in
        current = active()
        settings = current.store.settings if current is not None else load_settings()
    project = project or settings.project
    frame = read_since(
        predictions_dir(settings.home, project, deployment),
        since,
        time.time() if until is None else until,
    )
    labels = read_feedback(feedback_dir(settings.home, project, deployment))
    if not len(frame) or not len(labels):
        return pd.DataFrame(columns=[label])
    joined = frame.merge(labels[["request_id", "row", "label"]], on=["request_id", "row"])
    inputs = joined[[c for c in joined.columns if c.startswith(INPUT)]]
    out = inputs.rename(columns=lambda c: c[len(INPUT) :]).copy()
    out[label] = list(joined["label"])
    return out.reset_index(drop=True)
