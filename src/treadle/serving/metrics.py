"""Prometheus metrics of a model server, in a registry of its own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class ServerMetrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "treadle_requests",
            "Prediction requests by model version, endpoint and status.",
            ["model", "version", "endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "treadle_request_latency_seconds",
            "Time to answer a prediction request.",
            ["model", "version", "endpoint"],
            registry=self.registry,
            buckets=(
                0.0005,
                0.001,
                0.002,
                0.004,
                0.008,
                0.016,
                0.032,
                0.064,
                0.128,
                0.256,
                0.512,
                1.0,
                2.0,
            ),
        )
        self.batch_rows = Histogram(
            "treadle_batch_rows",
            "Rows per predict call after micro-batching.",
            ["model", "version"],
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096),
        )
        self.queue_depth = Gauge(
            "treadle_prediction_log_queue",
            "Predictions waiting to be written to the log.",
            registry=self.registry,
        )
        self.log_dropped = Gauge(
            "treadle_prediction_log_dropped",
            "Predictions dropped because the log queue was full.",
            registry=self.registry,
        )
        self.shadow_dropped = Gauge(
            "treadle_shadow_dropped",
            "Shadow requests dropped because the shadow queue was full.",
            registry=self.registry,
        )
        self.swaps = Counter(
            "treadle_revision_swaps",
            "Times a new revision was loaded and put in service.",
            registry=self.registry,
        )
        self._children: dict[tuple[Any, ...], Any] = {}

    def batch_counter(self, model: str, version: int) -> Callable[[int], None]:
        """A function recording the rows of each predict call of one version."""
        key = ("batch", model, version)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = self.batch_rows.labels(model, str(version)).observe
        observe: Callable[[int], None] = found
        return observe

    def observe(self, model: str, version: int, endpoint: str, status: int, seconds: float) -> None:
        key = (model, version, endpoint, status)
        pair = self._children.get(key)
        if pair is None:
            pair = self._children[key] = (
                self.requests.labels(model, str(version), endpoint, str(status)),
                self.latency.labels(model, str(version), endpoint),
            )
        pair[0].inc()
        pair[1].observe(seconds)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        result: bytes = generate_latest(self.registry)
        return result
