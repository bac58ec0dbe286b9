"""Quickstart: train and evaluate a classifier on a dataset scikit-learn ships.

    treadle run examples/quickstart/pipeline.py -p c=0.5 --experiment demo

Run it twice: the second time every step is answered from the cache. Each new model is
registered as a version of `breast-cancer` (see `treadle models versions breast-cancer`).
"""

from __future__ import annotations

import pandas as pd
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from treadle import (
    Metrics,
    Model,
    log_metric,
    log_param,
    pipeline,
    register_model,
    set_alias,
    step,
)
from treadle.registry import GateFailedError

TARGET = "target"


@step
def load(rows: int = 500) -> pd.DataFrame:
    """A sample of the Wisconsin breast-cancer table (569 rows, 30 features)."""
    frame = load_breast_cancer(as_frame=True).frame
    return frame.sample(n=min(rows, len(frame)), random_state=0).reset_index(drop=True)


@step
def split(data: pd.DataFrame, test_size: float = 0.25) -> tuple[pd.DataFrame, pd.DataFrame]:
    train, test = train_test_split(data, test_size=test_size, random_state=0, stratify=data[TARGET])
    print(f"train rows: {len(train)}, test rows: {len(test)}")
    return train, test


@step(cache=True, retries=2)
def train(data: pd.DataFrame, c: float = 1.0) -> Model:
    log_param("model", "logistic-regression")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    model.fit(data.drop(columns=TARGET), data[TARGET])
    log_metric("train_accuracy", model.score(data.drop(columns=TARGET), data[TARGET]))
    return model


@step
def evaluate(model: Model, data: pd.DataFrame) -> Metrics:
    features, truth = data.drop(columns=TARGET), data[TARGET]
    predicted = model.predict(features)
    scores = model.predict_proba(features)[:, 1]
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "f1": float(f1_score(truth, predicted)),
        "auc": float(roc_auc_score(truth, scores)),
    }


@step
def register(model: Model, data: pd.DataFrame, metrics: Metrics, gate: str) -> int:
    """Register the model with its signature, training-data profile and test metrics,
    and make it the `challenger` if it passes the gate. A model that fails the gate is
    still registered; the run succeeds and its `promotion` param says why it stayed."""
    features = data.drop(columns=TARGET)
    version = register_model(
        model,
        "breast-cancer",
        input_example=features.head(),
        training_data=features,
        metrics=metrics,
    )
    try:
        set_alias(f"breast-cancer@{version.version}", "challenger", require_conditions=[gate])
        log_param("promotion", f"version {version.version} is the challenger ({gate})")
    except GateFailedError as refused:
        log_param("promotion", f"not promoted: {refused.message}")
    return version.version


@pipeline(smoke={"rows": 120})
def training(rows: int = 500, c: float = 1.0, gate: str = "accuracy >= 0.9") -> None:
    data = load(rows)
    train_set, test_set = split(data)
    model = train(train_set, c)
    metrics = evaluate(model, test_set)
    register(model, train_set, metrics, gate)


if __name__ == "__main__":
    run = training(c=0.5)
    print(run, run.metrics)
