"""A pipeline whose training step registers its model, for the registry tests."""

from __future__ import annotations

import pandas as pd
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from treadle import log_metric, pipeline, register_model, step

FEATURES = ["f0", "f1", "f2", "f3"]


@step
def make_data(rows: int, seed: int) -> pd.DataFrame:
    X, y = make_classification(n_samples=rows, n_features=len(FEATURES), random_state=seed)
    frame = pd.DataFrame(X, columns=FEATURES)
    frame["label"] = y
    return frame


@step
def train_and_register(data: pd.DataFrame, model_name: str) -> int:
    features = data[FEATURES]
    model = LogisticRegression(max_iter=500).fit(features, data["label"])
    log_metric("accuracy", float(model.score(features, data["label"])))
    log_metric("rows", float(len(data)))
    # no metrics given: the version takes the run's metrics logged so far
    version = register_model(
        model, model_name, input_example=features.head(8), training_data=features
    )
    return version.version


@pipeline
def train_flow(rows: int = 120, seed: int = 0, model_name: str = "pipe-model") -> None:
    train_and_register(make_data(rows, seed), model_name)
