"""Service health of a window: request rate and latency per model version from the
prediction log, and error rates from the model server's own request counter."""

from __future__ import annotations

import http.client
import math
import urllib.request
from typing import Any

REQUESTS_COUNTER = "treadle_requests_total"
"""The model server's count of prediction requests, labelled model, version, endpoint
and status (treadle.serving.metrics)."""
RequestCounts = dict[tuple[str, str, str], float]
"""Requests a model server counted, by (version, endpoint, status)."""


def _percentile(values: Any, q: float) -> float | None:
    import numpy as np

    return float(np.percentile(values, q)) if len(values) else None


def health(frame: Any, span: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for version, part in frame.groupby("version"):
        latency = part.drop_duplicates("request_id")["latency_ms"].to_numpy()
        requests = int(part["request_id"].nunique())
        out[str(int(version))] = {
            "rows": len(part),
            "requests": requests,
            "requests_per_s": requests / span if span > 0 else None,
            "p50_ms": _percentile(latency, 50),
            "p95_ms": _percentile(latency, 95),
            "p99_ms": _percentile(latency, 99),
        }
    latency = frame.drop_duplicates("request_id")["latency_ms"].to_numpy()
    requests = int(frame["request_id"].nunique()) if len(frame) else 0
    return {
        "requests": requests,
        "requests_per_s": requests / span if span > 0 else None,
        "p50_ms": _percentile(latency, 50),
        "p95_ms": _percentile(latency, 95),
        "p99_ms": _percentile(latency, 99),
        "by_version": out,
    }


def request_counts(text: str) -> RequestCounts:
    """The request counts in a model server's `/metrics` text (Prometheus text format);
    a ValueError when the text is not that format."""
    from prometheus_client.parser import text_string_to_metric_families

    counts: RequestCounts = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != REQUESTS_COUNTER or not math.isfinite(sample.value):
                continue
            labels = sample.labels
            key = (labels.get("version", ""), labels.get("endpoint", ""), labels.get("status", ""))
            counts[key] = counts.get(key, 0.0) + float(sample.value)
    return counts


def scrape_requests(port: int, timeout: float = 1.0) -> RequestCounts | None:
    """The request counts of the model server on 127.0.0.1:`port`, or None when it does
    not answer with Prometheus text (stopped, starting, or something else on the port)."""
    # the server is on this machine: a proxy from the environment must not see the scrape
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as response:
            return request_counts(response.read().decode())
    except (OSError, ValueError, http.client.HTTPException, ImportError):
        return None


def error_rates(before: RequestCounts, after: RequestCounts) -> dict[str, Any] | None:
    """Errors over requests between two scrapes of one model server: `error_rate`
    overall (None when no request was counted) and `by_version` {version: rate}.

    An error is an answer whose status is not 2xx: a refused request (4xx: a body that
    is not JSON, a missing column, too many rows) as much as a failure (5xx: the model
    raised, or the server was not ready). The overall rate counts the requests answered
    to callers; shadow copies, which no caller sees, count only in their version's
    rate; a request refused before a version was chosen (an unknown model name, no
    model loaded yet) counts only overall. None when a counter went down: the server
    restarted between the scrapes, so they do not compare."""
    if any(after.get(key, 0.0) < value for key, value in before.items()):
        return None
    requests = errors = 0.0
    per_version: dict[str, tuple[float, float]] = {}
    for (version, endpoint, status), value in after.items():
        added = value - before.get((version, endpoint, status), 0.0)
        if added <= 0:
            continue
        failed = 0.0 if len(status) == 3 and status.startswith("2") else added
        if endpoint != "shadow":
            requests, errors = requests + added, errors + failed
        if version != "0":  # the label of requests no version answered
            seen, wrong = per_version.get(version, (0.0, 0.0))
            per_version[version] = (seen + added, wrong + failed)
    return {
        "error_rate": errors / requests if requests else None,
        "by_version": {v: wrong / seen for v, (seen, wrong) in per_version.items()},
    }


def add_error_rates(stats: dict[str, Any], rates: dict[str, Any] | None) -> None:
    """Put the error rates (None: unknown) in a window's health, beside each version's
    latency, and in the metrics its alert rules read."""
    health_stats = stats["health"]
    health_stats["error_rate"] = (rates or {}).get("error_rate")
    by_version = health_stats.setdefault("by_version", {})
    measured = (rates or {}).get("by_version", {})
    for version in [*by_version, *(v for v in measured if v not in by_version)]:
        by_version.setdefault(version, {})["error_rate"] = measured.get(version)
    stats["metrics"]["error_rate"] = health_stats["error_rate"]
