"""A small retraining pipeline for the closed-loop tests, and the world they simulate.

The world: four standard-normal features and a label that is 1 when f0 + f1 > 0. When
the world shifts, every feature moves by `shift` but the labels stay what they were, so a
model trained before the shift is wrong more often after it, and one trained on what the
deployment saw since is right again.

`retrain` trains a classifier and registers it as `loop-model` with the accuracy it is
told to report (so a test decides whether it passes a gate), or, given a deployment,
trains on the labelled predictions that deployment logged since `since`, as a policy's
retraining run does. `fail=True` fails the run on purpose.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from treadle import pipeline, register_model, step
from treadle.monitoring.data import labelled

FEATURES = ["f0", "f1", "f2", "f3"]
LABEL = "label"
MODEL = "loop-model"
DTYPES = {**{name: "float64" for name in FEATURES}, "prediction": "int64"}


def world(rows: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """`rows` rows of the world: the features (moved by `shift`) and the true label."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, len(FEATURES)))
    frame = pd.DataFrame(x + shift, columns=FEATURES)
    frame[LABEL] = (x[:, 0] + x[:, 1] > 0).astype(int)
    return frame


def fit(data: pd.DataFrame) -> LogisticRegression:
    return LogisticRegression(max_iter=500).fit(data[FEATURES], data[LABEL].astype(int))


@step(cache=False)
def load(rows: int, seed: int, deployment: str, since: float, fail: bool) -> pd.DataFrame:
    if fail:
        raise RuntimeError("failing on purpose: no data today")
    if not deployment:
        return world(rows, seed)
    live = labelled(deployment, since)
    if len(live) < 20:
        raise ValueError(f"only {len(live)} labelled predictions of {deployment} since {since}")
    return live


@step(cache=False)
def train_and_register(data: pd.DataFrame, accuracy: float) -> int:
    features = data[FEATURES].astype(float)
    model = fit(data)
    measured = float(model.score(features, data[LABEL].astype(int)))
    version = register_model(
        model,
        MODEL,
        input_example=features.head(5),
        training_data=features,
        metrics={"accuracy": accuracy if accuracy >= 0 else measured, "train_accuracy": measured},
    )
    return version.version


@pipeline
def retrain(
    rows: int = 300,
    seed: int = 0,
    deployment: str = "",
    since: float = 0.0,
    accuracy: float = -1.0,
    fail: bool = False,
) -> None:
    train_and_register(load(rows, seed, deployment, since, fail), accuracy)
