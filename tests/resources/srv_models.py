"""Registers versions of a 20-feature classifier for the model-server tests.

Run as `python srv_models.py NAME C [C ...]` with TREADLE_HOME set: one version of NAME
per C, each a LogisticRegression on make_classification data with columns f0..f19, an
input example of five rows and test metrics. Different C values give versions whose
predictions differ on some rows, so a test can tell which version answered.
"""

from __future__ import annotations

import sys

import pandas as pd
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

import treadle

FEATURES = [f"f{i}" for i in range(20)]


def dataset() -> tuple[pd.DataFrame, pd.Series]:
    X, y = make_classification(n_samples=400, n_features=20, n_informative=8, random_state=7)
    return pd.DataFrame(X, columns=FEATURES), pd.Series(y, name="target")


def register(name: str, c: float) -> int:
    frame, target = dataset()
    train, test = frame.iloc[:300], frame.iloc[300:]
    model = LogisticRegression(C=c, max_iter=1000).fit(train, target.iloc[:300])
    accuracy = float(model.score(test, target.iloc[300:]))
    version = treadle.register_model(
        model,
        name,
        input_example=frame.head(),
        metrics={"accuracy": accuracy, "c": c},
    )
    return version.version


def main(argv: list[str]) -> None:
    name, *cs = argv
    for c in cs:
        print(f"{name} v{register(name, float(c))} C={c}")


if __name__ == "__main__":
    main(sys.argv[1:])
