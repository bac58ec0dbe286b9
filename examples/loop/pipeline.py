"""The closed loop's training pipeline: train on the bundled breast-cancer data, or — when
a policy retrains it after drift — on the labelled live data a deployment saw since the
drift began. Its last step registers the model and makes it the challenger through the
gate the policy passes in.

    treadle run examples/loop/pipeline.py                       # from the bundled data
    treadle run examples/loop/pipeline.py -p deployment=api -p since=1764180000
"""

from __future__ import annotations

import pandas as pd
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from treadle import Metrics, Model, log_param, pipeline, register_model, set_alias, step
from treadle.monitoring.data import labelled
from treadle.registry import GateFailedError

TARGET = "target"
MODEL = "tumor-classifier"


@step(cache=False)
def load(deployment: str = "", since: float = 0.0, rows: int = 569) -> pd.DataFrame:
    """The bundled data, or the deployment's labelled live data since `since`."""
    if not deployment:
        frame = load_breast_cancer(as_frame=True).frame.head(rows)
        return frame.rename(columns=lambda c: c.replace(" ", "_"))
    live = labelled(deployment, since, label=TARGET)
    if len(live) < 60:
        raise ValueError(f"only {len(live)} labelled predictions since {since}: too few to train")
    log_param("trained_on", f"{len(live)} labelled live predictions of {deployment}")
    return live.astype({TARGET: int})


@step
def split(data: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    train, test = train_test_split(data, test_size=0.3, random_state=0, stratify=data[TARGET])
    return train, test


@step
def train(data: pd.DataFrame, c: float = 1.0) -> Model:
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    model.fit(data.drop(columns=TARGET), data[TARGET])
    return model


@step
def evaluate(model: Model, data: pd.DataFrame) -> Metrics:
    features, truth = data.drop(columns=TARGET), data[TARGET]
    predicted = model.predict(features)
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "f1": float(f1_score(truth, predicted)),
        "auc": float(roc_auc_score(truth, model.predict_proba(features)[:, 1])),
    }


@step
def register(model: Model, data: pd.DataFrame, metrics: Metrics, gate: str) -> int:
    features = data.drop(columns=TARGET)
    version = register_model(
        model, MODEL, input_example=features.head(), training_data=features, metrics=metrics
    )
    if gate:
        try:
            set_alias(f"{MODEL}@{version.version}", "challenger", require_conditions=[gate])
            log_param("promotion", f"version {version.version} is the challenger ({gate})")
        except GateFailedError as refused:
            log_param("promotion", f"not promoted: {refused.message}")
    return version.version


@pipeline(smoke={"rows": 200})
def training(
    deployment: str = "", since: float = 0.0, rows: int = 569, c: float = 1.0, gate: str = ""
) -> None:
    data = load(deployment, since, rows)
    train_set, test_set = split(data)
    model = train(train_set, c)
    metrics = evaluate(model, test_set)
    register(model, train_set, metrics, gate)
