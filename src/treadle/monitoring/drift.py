"""Drift between a model version's reference profile and a window of live requests.

`compare(reference, live)` takes the profile stored at registration
(`treadle.models.profile.profile_frame`) and a DataFrame of live rows, and says per
feature whether its distribution moved, by how much, and how sure that is.

A verdict needs both an effect size and, for the tests that have one, a p-value:

- an effect size (KS distance, Jensen-Shannon distance, ...) at least the threshold,
  so that a large window does not flag differences too small to matter (with 10^5
  rows on each side, a KS p-value alone detects a shift of 0.015 standard deviations);
- a p-value under `alpha / number of tests` (Bonferroni), so that a small window does
  not flag what sampling noise alone would produce.

Numeric features: the KS distance is read at the reference's 101 percentiles (exact
for the live side there; within about 0.01 of the full KS distance), with the
asymptotic p-value at the effective sample size n*m/(n+m); Wasserstein-1 between the
quantile functions over the levels 0.01 to 0.99, in reference standard deviations; PSI
on the reference deciles. Categorical features: the reference's top values plus an "other" bucket, a
two-sample chi-squared test, the Jensen-Shannon distance (base 2) and PSI.

Pure functions over numbers: no I/O, nothing stored. numpy and pandas are imported
when first needed, so importing this module stays cheap.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from treadle.errors import InvalidInputError
from treadle.models.profile import PERCENTILES, TOP

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

NUMERIC_METHODS = ("ks", "wasserstein", "psi")
CATEGORICAL_METHODS = ("js", "psi", "chi2")
# Proportions below this count as this in PSI, so an empty bin costs a large, finite term.
PSI_EPSILON = 1e-4
NEW_CATEGORIES_SHOWN = 20
# The share of each tail the Wasserstein distance leaves out (see _wasserstein).
TAIL = 0.01
PREDICTION = "prediction"


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """When a feature, and the whole window, count as drifted."""

    ks: float = 0.1  # KS distance (effect size) a numeric feature must reach
    wasserstein: float = 0.1  # Wasserstein-1 in reference standard deviations
    psi: float = 0.2
    js: float = 0.1  # Jensen-Shannon distance (base 2) for categorical features
    alpha: float = 0.05  # family-wise: each test at alpha / number of tests (Bonferroni)
    share: float = 0.5  # dataset drift when at least this share of features drifted
    method_numeric: str = "ks"  # "ks" | "wasserstein" | "psi"
    method_categorical: str = "js"  # "js" | "psi" | "chi2"

    def __post_init__(self) -> None:
        if self.method_numeric not in NUMERIC_METHODS:
            raise InvalidInputError(
                f"unknown numeric drift method {self.method_numeric!r}",
                hint=f"use one of {', '.join(NUMERIC_METHODS)}",
            )
        if self.method_categorical not in CATEGORICAL_METHODS:
            raise InvalidInputError(
                f"unknown categorical drift method {self.method_categorical!r}",
                hint=f"use one of {', '.join(CATEGORICAL_METHODS)}",
            )
        if not 0.0 < self.alpha < 1.0:
            raise InvalidInputError(f"alpha must be between 0 and 1, not {self.alpha}")


@dataclasses.dataclass(frozen=True)
class FeatureDrift:
    """One feature (or the predictions) of a live window against its reference."""

    name: str
    kind: str  # "numeric" | "categorical"
    drifted: bool
    method: str
    effect: float  # the method's effect size; 0.0 when nothing could be compared
    threshold: float
    p_value: float | None  # the test behind the verdict; None for wasserstein and psi
    stats: dict[str, float]  # every statistic computed; empty when nothing was compared
    rows: int
    missing: int
    out_of_range: int  # numeric: live values outside the reference [min, max]
    new_categories: dict[str, int]  # categorical: values the reference never saw
    reference: dict[str, Any]  # numeric: levels, percentiles; categorical: frequencies
    live: dict[str, Any]  # the same shape, for the live window


@dataclasses.dataclass(frozen=True)
class DriftReport:
    """Every feature's drift, the predictions' drift, and the verdict on the window."""

    features: list[FeatureDrift]
    prediction: FeatureDrift | None
    rows: int
    drifted: list[str]
    drift_share: float
    dataset_drift: bool

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (no NaN or infinity), to store or to send."""
        return dataclasses.asdict(self)


def compare(
    reference: Mapping[str, Any],
    live: Any,
    predictions: Any = None,
    thresholds: Thresholds = Thresholds(),
    columns: Sequence[str] | None = None,
) -> DriftReport:
    """Compare a window of live rows (and the model's predictions on them) with a profile.

    `reference` is a profile from `profile_frame`; `live` a DataFrame (or anything
    `pandas.DataFrame` accepts) with the same columns. `columns` limits the comparison;
    columns the profile does not know are skipped. A column absent from `live` is
    reported with every row missing. Missing values (NaN, None; infinities in numeric
    columns) are counted and left out. An empty window gives a report in which nothing
    drifted. Predictions are compared with the profile's `prediction` entry and do not
    count towards `drift_share`.
    """
    import numpy as np
    import pandas as pd

    frame = live if isinstance(live, pd.DataFrame) else pd.DataFrame(live)
    profiles: Mapping[str, Any] = reference.get("columns", {})
    wanted = list(profiles) if columns is None else [str(c) for c in columns]
    names = [name for name in wanted if name in profiles]
    by_name = {str(c): c for c in frame.columns}
    prediction_profile = reference.get(PREDICTION)
    if predictions is None or not isinstance(prediction_profile, Mapping):
        prediction_profile = None
    # One family: every feature and the predictions, so that a report holds a false
    # alarm anywhere with probability at most alpha.
    tests = len(names) + (prediction_profile is not None)
    alpha = thresholds.alpha / max(tests, 1)

    rows = len(frame)
    features = [
        _feature(
            name,
            profiles[name],
            frame[by_name[name]] if name in by_name else None,
            rows,
            thresholds,
            alpha,
        )
        for name in names
    ]
    prediction = None
    if prediction_profile is not None:
        values = np.asarray(predictions)
        values = values.reshape(-1) if values.ndim != 1 else values
        series = pd.Series(values, copy=False)
        prediction = _feature(
            PREDICTION, prediction_profile, series, len(series), thresholds, alpha
        )
    drifted = [f.name for f in features if f.drifted]
    share = len(drifted) / len(features) if features else 0.0
    return DriftReport(
        features=features,
        prediction=prediction,
        rows=rows,
        drifted=drifted,
        drift_share=share,
        dataset_drift=bool(drifted) and share >= thresholds.share,
    )


def _feature(
    name: str,
    profile: Mapping[str, Any],
    values: pd.Series | None,
    rows: int,
    thresholds: Thresholds,
    alpha: float,
) -> FeatureDrift:
    if profile.get("type") == "numeric":
        return _numeric(name, profile, values, rows, thresholds, alpha)
    return _categorical(name, profile, values, rows, thresholds, alpha)


# -- numeric ------------------------------------------------------------------------------


def _numeric(
    name: str,
    profile: Mapping[str, Any],
    values: pd.Series | None,
    rows: int,
    thresholds: Thresholds,
    alpha: float,
) -> FeatureDrift:
    import numpy as np

    method = thresholds.method_numeric
    threshold = {
        "ks": thresholds.ks,
        "wasserstein": thresholds.wasserstein,
        "psi": thresholds.psi,
    }[method]
    levels, points = _reference_points(profile)
    if values is None:
        live, missing = np.empty(0), rows
    else:
        data = _as_float(values)
        live = np.sort(data[np.isfinite(data)])
        missing = int(data.size - live.size)
    result = FeatureDrift(
        name=name,
        kind="numeric",
        drifted=False,
        method=method,
        effect=0.0,
        threshold=threshold,
        p_value=None,
        stats={},
        rows=rows,
        missing=missing,
        out_of_range=0,
        new_categories={},
        reference={"levels": levels.tolist(), "percentiles": points.tolist()},
        live={"levels": list(PERCENTILES), "percentiles": []},
    )
    n = int(profile.get("count", 0)) - int(profile.get("missing", 0))
    m = int(live.size)
    if m == 0 or n <= 0 or points.size == 0:
        return result
    live_percentiles = _quantiles_of_sorted(live, np.asarray(PERCENTILES))
    same_levels = levels.size == len(PERCENTILES)
    live_points = live_percentiles if same_levels else _quantiles_of_sorted(live, levels)

    # The reference CDF is known at its distinct percentile values; with ties (discrete
    # columns) the CDF at a value is the highest level that has it.
    grid = np.unique(points)
    grid_cdf = levels[np.searchsorted(points, grid, side="right") - 1]
    live_cdf = np.searchsorted(live, grid, side="right") / m
    ks = float(np.max(np.abs(live_cdf - grid_cdf)))
    ks_p = _kolmogorov_sf(ks, n * m / (n + m))

    std = float(profile.get("std", 0.0))
    wasserstein = _wasserstein(levels, live_points - points) / (std if std > 0 else 1.0)
    psi = _numeric_psi(levels, points, live)

    low = float(profile.get("min", points[0]))
    high = float(profile.get("max", points[-1]))
    out_of_range = int(
        np.searchsorted(live, low, side="left") + m - np.searchsorted(live, high, side="right")
    )
    stats = {"ks": ks, "ks_p": ks_p, "wasserstein": wasserstein, "psi": psi}
    effect = stats[method]
    p_value = ks_p if method == "ks" else None
    drifted = effect >= threshold and (p_value is None or p_value < alpha)
    return dataclasses.replace(
        result,
        drifted=drifted,
        effect=effect,
        p_value=p_value,
        stats=stats,
        out_of_range=out_of_range,
        live={"levels": list(PERCENTILES), "percentiles": live_percentiles.tolist()},
    )


def _as_float(values: pd.Series) -> np.ndarray:
    import numpy as np
    import pandas as pd

    if pd.api.types.is_numeric_dtype(values.dtype):
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    # Text in a numeric column cannot be compared: it counts as missing.
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _reference_points(profile: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Probability levels and the reference's values at them: the 101 percentiles, or
    the 11 quantiles of profiles written before percentiles were kept."""
    import numpy as np

    percentiles = profile.get("percentiles")
    if percentiles is not None and len(percentiles) == len(PERCENTILES):
        levels = np.asarray(PERCENTILES, dtype=np.float64)
        points = np.asarray(percentiles, dtype=np.float64)
    else:
        pairs = sorted((float(q), float(v)) for q, v in profile.get("quantiles", {}).items())
        levels = np.asarray([q for q, _ in pairs], dtype=np.float64)
        points = np.asarray([v for _, v in pairs], dtype=np.float64)
    # Interpolated quantiles can dip by a rounding error; searchsorted needs them sorted.
    return levels, np.maximum.accumulate(points) if points.size else points


def _quantiles_of_sorted(data: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Quantiles of sorted data, interpolated as `numpy.quantile` does by default."""
    import numpy as np

    position = levels * (data.size - 1)
    low = np.floor(position).astype(np.intp)
    high = np.minimum(low + 1, data.size - 1)
    return data[low] + (data[high] - data[low]) * (position - low)


def _wasserstein(levels: np.ndarray, gaps: np.ndarray) -> float:
    """Wasserstein-1 from the gaps between two quantile functions at `levels`.

    The integral of |gap| over the levels from 0.01 to 0.99, the gap taken as linear
    between levels (exact for that, sign changes included), divided by 0.98. The 1 %
    at each end is left out because a sample's minimum and maximum depend on its size
    more than on its distribution: with them, a small window of unchanged data would
    be a long way from a large reference. For a pure shift it is the shift.
    """
    import numpy as np

    inside = (levels >= TAIL - 1e-9) & (levels <= 1.0 - TAIL + 1e-9)
    levels, gaps = levels[inside], gaps[inside]
    if levels.size < 2:
        return 0.0
    width = np.diff(levels)
    a, b = np.abs(gaps[:-1]), np.abs(gaps[1:])
    crossing = gaps[:-1] * gaps[1:] < 0
    total = np.where(a + b > 0, a + b, 1.0)
    area = np.where(crossing, (a * a + b * b) / (2 * total), (a + b) / 2)
    return float(np.sum(width * area) / (levels[-1] - levels[0]))


def _numeric_psi(levels: np.ndarray, points: np.ndarray, live: np.ndarray) -> float:
    """PSI over bins cut at the reference deciles (at the interior quantiles when the
    profile keeps no percentiles); tied cut points merge their bins."""
    import numpy as np

    deciles = levels.size == len(PERCENTILES)
    cuts = np.unique(points[10:100:10] if deciles else points[1:-1])
    expected_cdf = levels[np.searchsorted(points, cuts, side="right") - 1]
    actual_cdf = np.searchsorted(live, cuts, side="right") / live.size
    expected = np.diff(np.concatenate(([0.0], expected_cdf, [1.0])))
    actual = np.diff(np.concatenate(([0.0], actual_cdf, [1.0])))
    return _psi(expected, actual)


def _psi(expected: np.ndarray, actual: np.ndarray) -> float:
    import numpy as np

    e = np.maximum(expected, PSI_EPSILON)
    a = np.maximum(actual, PSI_EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def _kolmogorov_sf(distance: float, n: float) -> float:
    """Asymptotic p-value of a KS distance at effective sample size n, with Stephens'
    small-sample correction of the scale."""
    root = math.sqrt(n)
    lam = (root + 0.12 + 0.11 / root) * distance
    if lam < 0.2:  # the series below is 1 to within 1e-9 here, and converges slowly
        return 1.0
    total = 0.0
    for k in range(1, 101):
        term = math.exp(-2.0 * k * k * lam * lam)
        total += term if k % 2 else -term
        if term < 1e-16:
            break
    return min(max(2.0 * total, 0.0), 1.0)


# -- categorical --------------------------------------------------------------------------


def _categorical(
    name: str,
    profile: Mapping[str, Any],
    values: pd.Series | None,
    rows: int,
    thresholds: Thresholds,
    alpha: float,
) -> FeatureDrift:
    import numpy as np
    import pandas as pd

    method = thresholds.method_categorical
    # chi2 is the classic test: the p-value alone decides (Cramer's V is reported).
    threshold = {"js": thresholds.js, "psi": thresholds.psi, "chi2": 0.0}[method]
    frequencies = {str(k): int(v) for k, v in profile.get("frequencies", {}).items()}
    n = int(profile.get("count", 0)) - int(profile.get("missing", 0))
    if values is None:
        counts, missing = pd.Series([], dtype="int64"), rows
    else:
        counts = values.astype("string").value_counts(dropna=True)
        missing = int(values.isna().sum())
    m = int(counts.sum())
    # The profile keeps only the most frequent values; when it kept them all, anything
    # else in the window is new. Otherwise nothing can be said to be new.
    complete = int(profile.get("distinct", len(frequencies))) <= len(frequencies)
    unknown = counts[~counts.index.isin(list(frequencies))]
    new_categories = (
        {str(k): int(v) for k, v in unknown.head(NEW_CATEGORIES_SHOWN).items()} if complete else {}
    )
    result = FeatureDrift(
        name=name,
        kind="categorical",
        drifted=False,
        method=method,
        effect=0.0,
        threshold=threshold,
        p_value=None,
        stats={},
        rows=rows,
        missing=missing,
        out_of_range=0,
        new_categories=new_categories,
        reference={"count": n, "frequencies": frequencies},
        live={"count": m, "frequencies": {str(k): int(v) for k, v in counts.head(TOP).items()}},
    )
    if m == 0 or n <= 0:
        return result

    # Buckets: the reference's top values, then everything else ("other") on both sides.
    reference_counts = np.array([*frequencies.values(), 0], dtype=np.float64)
    reference_counts[-1] = max(n - reference_counts[:-1].sum(), 0.0)
    live_counts = np.append(
        counts.reindex(list(frequencies), fill_value=0).to_numpy(dtype=np.float64), 0.0
    )
    live_counts[-1] = m - live_counts[:-1].sum()
    used = (reference_counts + live_counts) > 0
    reference_counts, live_counts = reference_counts[used], live_counts[used]

    chi2, dof = _homogeneity_chi2(reference_counts, live_counts)
    chi2_p = _chi2_sf(chi2, dof)
    expected, actual = reference_counts / n, live_counts / m
    stats = {
        "chi2": chi2,
        "chi2_p": chi2_p,
        "cramers_v": math.sqrt(chi2 / (n + m)),  # the 2 x k table's effect size
        "js": _jensen_shannon(expected, actual),
        "psi": _psi(expected, actual),
    }
    effect = stats["cramers_v" if method == "chi2" else method]
    p_value = None if method == "psi" else chi2_p
    drifted = effect >= threshold and (p_value is None or p_value < alpha)
    return dataclasses.replace(result, drifted=drifted, effect=effect, p_value=p_value, stats=stats)


def _homogeneity_chi2(reference: np.ndarray, live: np.ndarray) -> tuple[float, int]:
    """Pearson's chi-squared on the 2 x k table of reference and live counts.

    Two-sample, not goodness-of-fit against the reference as if it were exact: the
    reference is a sample too, and with a window as large as it, a goodness-of-fit
    statistic would be about twice too large and flag noise.
    """
    import numpy as np

    if reference.size < 2:
        return 0.0, 0
    table = np.vstack([reference, live])
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0) / table.sum()
    return float(np.sum((table - expected) ** 2 / expected)), int(reference.size - 1)


def _jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance in base 2: 0 for equal distributions, 1 for disjoint."""
    import numpy as np

    middle = (p + q) / 2

    def kl(x: np.ndarray) -> float:
        nonzero = x > 0
        return float(np.sum(x[nonzero] * np.log2(x[nonzero] / middle[nonzero])))

    divergence = (kl(p) + kl(q)) / 2
    return min(math.sqrt(max(divergence, 0.0)), 1.0)


def _chi2_sf(statistic: float, dof: int) -> float:
    """P(X >= statistic) for X chi-squared with `dof` degrees of freedom."""
    if dof <= 0:
        return 1.0
    try:
        from scipy.special import gammaincc
    except ImportError:
        return _upper_regularized_gamma(dof / 2.0, statistic / 2.0)
    return float(gammaincc(dof / 2.0, statistic / 2.0))


def _upper_regularized_gamma(a: float, x: float) -> float:
    """Q(a, x) = Gamma(a, x) / Gamma(a), for when scipy is not installed: the power
    series of P below x = a + 1, a continued fraction (modified Lentz) above."""
    if x <= 0.0:
        return 1.0
    log_prefix = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:
        term = total = 1.0 / a
        denominator = a
        for _ in range(10_000):
            denominator += 1.0
            term *= x / denominator
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return min(max(1.0 - total * math.exp(log_prefix), 0.0), 1.0)
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    fraction = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        step = d * c
        fraction *= step
        if abs(step - 1.0) < 1e-15:
            break
    return min(max(math.exp(log_prefix) * fraction, 0.0), 1.0)
