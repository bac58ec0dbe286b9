"""The same closed loop for a regressor: disease progression from the diabetes data
scikit-learn ships. Only the pipeline and its policy differ from the classifier's loop.

    treadle demo --pipeline examples/loop/regression/pipeline.py \\
                 --policy examples/loop/regression/policy.yaml

(`policy.py` beside it is the same policy written in Python.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_absolute_error, mean_squared_error
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from treadle import Metrics, Model, log_param, pipeline, register_model, set_alias, step
from treadle.monitoring.data import labelled
from treadle.registry import GateFailedError

TARGET = "target"
MODEL = "progression-regressor"


@step(cache=False)
def load(deployment: str = "", since: float = 0.0, rows: int = 442) -> pd.DataFrame:
    """The bundled data, or the deployment's labelled live data since `since`."""
    if not deployment:
        return load_diabetes(as_frame=True, scaled=False).frame.head(rows)
    live = labelled(deployment, since, label=TARGET)
    if len(live) < 60:
        raise ValueError(f"only {len(live)} labelled predictions since {since}: too few to train")
    log_param("trained_on", f"{len(live)} labelled live predictions of {deployment}")
    return live.astype({TARGET: float})


@step
def split(data: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    train, test = train_test_split(data, test_size=0.3, random_state=0)
    return train, test


@step
def train(data: pd.DataFrame, alpha: float = 1.0) -> Model:
    model = make_pipeline(StandardScaler(), Ridge(alpha=alpha))
    model.fit(data.drop(columns=TARGET), data[TARGET])
    return model


@step
def evaluate(model: Model, data: pd.DataFrame) -> Metrics:
    predicted = model.predict(data.drop(columns=TARGET))
    return {
        "mae": float(mean_absolute_error(data[TARGET], predicted)),
        "rmse": float(np.sqrt(mean_squared_error(data[TARGET], predicted))),
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


@pipeline(smoke={"rows": 150})
def training(
    deployment: str = "", since: float = 0.0, rows: int = 442, alpha: float = 1.0, gate: str = ""
) -> None:
    data = load(deployment, since, rows)
    train_set, test_set = split(data)
    model = train(train_set, alpha)
    metrics = evaluate(model, test_set)
    register(model, train_set, metrics, gate)
