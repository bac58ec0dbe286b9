"""A python-flavor model for the registry tests: a linear threshold rule kept as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


class ThresholdModel:
    """Predicts 1 where the weighted sum of a row's features exceeds `threshold`."""

    requirements = ["numpy"]

    def __init__(self, weights: list[float], threshold: float) -> None:
        self.weights = [float(w) for w in weights]
        self.threshold = float(threshold)

    def predict(self, frame: Any) -> np.ndarray:
        X = np.asarray(frame, dtype=np.float64)
        return (X @ np.asarray(self.weights) > self.threshold).astype(np.int64)

    def save(self, path: Path) -> None:
        (Path(path) / "params.json").write_text(
            json.dumps({"weights": self.weights, "threshold": self.threshold})
        )

    @classmethod
    def load(cls, path: Path) -> ThresholdModel:
        params = json.loads((Path(path) / "params.json").read_text())
        return cls(params["weights"], params["threshold"])
