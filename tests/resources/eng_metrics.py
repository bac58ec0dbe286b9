"""Steps that log metrics and params, and one that returns a Metrics output."""

from __future__ import annotations

from pathlib import Path

from treadle import Metrics, log_metric, log_param, pipeline, step


@step
def train(epochs: int) -> float:
    loss = 1.0
    for _ in range(epochs):
        loss /= 2
        log_metric("loss", loss)
    log_param("optimizer", "sgd")
    return loss


@step
def evaluate(loss: float) -> Metrics:
    return {"accuracy": 1.0 - loss, "f1": 0.5}


@pipeline
def metrics_flow(epochs: int = 4) -> None:
    evaluate(train(epochs))


@step
def gate(loss: float, flag_file: str) -> float:
    if not Path(flag_file).exists():
        raise RuntimeError("the gate is closed")
    return loss


@pipeline
def train_then_gate(epochs: int = 2, flag_file: str = "") -> None:
    gate(train(epochs), flag_file)
