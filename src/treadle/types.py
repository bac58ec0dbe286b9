"""Shared vocabulary: run and step states, artifact kinds, and the marker types steps annotate.

`Model`, `Metrics` and `Dataset` are what a step writes in its signature
(`def train(data: Dataset) -> Model`). They are plain `Annotated` aliases, so a type
checker sees the real type and treadle reads the artifact kind from the metadata.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any


class RunState(str, enum.Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        return self in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)

    @property
    def resumable(self) -> bool:
        return self in (RunState.FAILED, RunState.CANCELLED)


class StepState(str, enum.Enum):
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    CACHED = "CACHED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    SKIPPED = "SKIPPED"

    @property
    def done(self) -> bool:
        """The step's outputs exist and downstream steps may use them."""
        return self in (StepState.SUCCEEDED, StepState.CACHED)


class ArtifactKind(str, enum.Enum):
    DATASET = "dataset"
    MODEL = "model"
    METRICS = "metrics"
    REPORT = "report"
    FILE = "file"
    VALUE = "value"


Model = Annotated[Any, ArtifactKind.MODEL]
"""A trained model (for example a scikit-learn estimator), saved with skops."""

Metrics = Annotated[dict[str, float], ArtifactKind.METRICS]
"""A mapping of metric name to number; a step returning it also logs each as a run metric."""

Dataset = Annotated[Any, ArtifactKind.DATASET]
"""Tabular or array data (a pandas DataFrame, a numpy array)."""

Report = Annotated[Any, ArtifactKind.REPORT]
"""A human-readable result such as an HTML or Markdown document."""
