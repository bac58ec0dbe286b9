"""Reference profiles: per-column statistics of the training data, kept with the model
so that live windows can later be compared with what the model was trained on.

Numeric columns keep quantiles, the 101 percentiles (0, 0.01, ..., 1: what drift
statistics compare live windows with), a histogram, mean and standard deviation; other
columns keep their most frequent values. Pure functions; the result is JSON-able.
"""

from __future__ import annotations

from typing import Any

QUANTILES = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
# i / 100 rather than a linspace, so that 0.05 here is the same float as in QUANTILES.
PERCENTILES = tuple(i / 100 for i in range(101))
BINS = 20
TOP = 50


def _numeric(values: Any) -> dict[str, Any]:
    import numpy as np

    data = np.asarray(values, dtype=np.float64)
    finite = data[np.isfinite(data)]
    out: dict[str, Any] = {
        "type": "numeric",
        "count": int(data.size),
        "missing": int(data.size - finite.size),
    }
    if finite.size == 0:
        return out
    counts, edges = np.histogram(finite, bins=BINS)
    out.update(
        mean=float(finite.mean()),
        std=float(finite.std()),
        min=float(finite.min()),
        max=float(finite.max()),
        quantiles={
            str(q): float(v) for q, v in zip(QUANTILES, np.quantile(finite, QUANTILES), strict=True)
        },
        histogram={"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
        percentiles=[float(v) for v in np.quantile(finite, PERCENTILES)],
    )
    return out


def _categorical(values: Any) -> dict[str, Any]:
    import pandas as pd

    series = pd.Series(values)
    counts = series.astype("string").value_counts(dropna=True)
    return {
        "type": "categorical",
        "count": int(series.size),
        "missing": int(series.isna().sum()),
        "distinct": int(counts.size),
        "frequencies": {str(k): int(v) for k, v in counts.head(TOP).items()},
    }


def profile_column(values: Any) -> dict[str, Any]:
    import numpy as np

    array = np.asarray(values)
    if array.dtype.kind in "fiu":
        return _numeric(array)
    if array.dtype.kind == "b":
        return _categorical(array.astype(str))
    return _categorical(values)


def profile_frame(frame: Any, predictions: Any = None) -> dict[str, Any]:
    """Profile every column of `frame` and, if given, the model's predictions on it."""
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        frame = pd.DataFrame(frame)
    profile: dict[str, Any] = {
        "rows": len(frame),
        "columns": {str(c): profile_column(frame[c].to_numpy()) for c in frame.columns},
    }
    if predictions is not None:
        profile["prediction"] = profile_column(predictions)
    return profile
