"""Drift of live windows against a reference profile: the right columns flagged, no
false alarms at any window size, and every corner (missing, empty, old profiles)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import Any

import numpy as np
import pandas as pd
import pytest

from treadle.errors import InvalidInputError
from treadle.models.profile import PERCENTILES, TOP, profile_frame
from treadle.monitoring import DriftReport, Thresholds, compare
from treadle.monitoring import drift as drift_module

COLUMNS = [f"x{i}" for i in range(20)]
SHIFTED = COLUMNS[:5]
REFERENCE_ROWS = 100_000


def normal_frame(rows: int, seed: int, shifted: tuple[str, ...] = (), shift: float = 0.0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.standard_normal((rows, len(COLUMNS))), columns=COLUMNS)
    for name in shifted:
        frame[name] += shift
    return frame


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    return profile_frame(normal_frame(REFERENCE_ROWS, seed=0))


def by_name(report: DriftReport) -> dict[str, Any]:
    return {f.name: f for f in report.features}


# -- the profile --------------------------------------------------------------------------


def test_profile_keeps_101_percentiles(reference: dict[str, Any]) -> None:
    column = reference["columns"]["x0"]
    percentiles = column["percentiles"]
    assert len(percentiles) == len(PERCENTILES) == 101
    assert percentiles == sorted(percentiles)
    assert percentiles[0] == column["min"] and percentiles[-1] == column["max"]
    assert percentiles[50] == pytest.approx(column["quantiles"]["0.5"])
    assert percentiles[25] == pytest.approx(column["quantiles"]["0.25"])


# -- the verdicts -------------------------------------------------------------------------


def test_exactly_the_shifted_columns_are_flagged(reference: dict[str, Any]) -> None:
    live = normal_frame(REFERENCE_ROWS, seed=1, shifted=tuple(SHIFTED), shift=0.5)
    report = compare(reference, live)
    assert report.drifted == SHIFTED
    assert report.drift_share == pytest.approx(5 / 20)
    assert not report.dataset_drift  # 25 % < the default share of 50 %
    features = by_name(report)
    for name in SHIFTED:
        feature = features[name]
        # KS distance of N(0.5, 1) from N(0, 1) is 2 * Phi(0.25) - 1 = 0.197.
        assert feature.effect == pytest.approx(0.197, abs=0.01)
        assert feature.stats["wasserstein"] == pytest.approx(0.5, abs=0.02)
        assert feature.p_value is not None and feature.p_value < 1e-10
        assert feature.method == "ks" and feature.threshold == 0.1
    assert max(features[name].effect for name in COLUMNS[5:]) < 0.02


@pytest.mark.parametrize(
    ("rows", "seed"),
    [(10_000, s) for s in range(1, 6)] + [(100_000, s) for s in range(1, 4)] + [(1_000_000, 1)],
)
def test_no_false_alarms_on_unshifted_data(reference: dict[str, Any], rows: int, seed: int):
    report = compare(reference, normal_frame(rows, seed))
    assert report.drifted == []
    assert not report.dataset_drift
    # Far from the thresholds, not just under them.
    assert max(f.effect for f in report.features) < 0.03
    assert max(f.stats["wasserstein"] for f in report.features) < 0.05


def test_a_small_shift_on_few_rows_is_noise_on_many_it_is_drift() -> None:
    rng = np.random.default_rng(5)
    reference = profile_frame(pd.DataFrame({"x": rng.standard_normal(50_000)}))
    few = compare(reference, pd.DataFrame({"x": rng.standard_normal(30) + 0.3}))
    many = compare(reference, pd.DataFrame({"x": rng.standard_normal(100_000) + 0.3}))
    (small,), (large,) = few.features, many.features
    # On 30 rows the distance passes the threshold, but 30 rows cannot tell it from noise.
    assert small.effect >= small.threshold
    assert small.p_value is not None and small.p_value > 0.05
    assert not small.drifted
    assert large.drifted and large.effect == pytest.approx(0.118, abs=0.01)


def test_a_bigger_shift_gives_a_bigger_effect() -> None:
    rng = np.random.default_rng(6)
    reference = profile_frame(pd.DataFrame({"x": rng.standard_normal(50_000)}))
    base = rng.standard_normal(20_000)
    stats = [
        compare(reference, pd.DataFrame({"x": base + s})).features[0].stats
        for s in (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)
    ]
    for key in ("ks", "wasserstein", "psi"):
        values = [s[key] for s in stats]
        assert values == sorted(values) and len(set(values)) == len(values), key
    assert stats[-1]["wasserstein"] == pytest.approx(2.0, abs=0.05)

    cats = ["a", "b", "c"]
    reference = profile_frame(pd.DataFrame({"c": rng.choice(cats, p=[0.5, 0.3, 0.2], size=30_000)}))
    effects = []
    for move in (0.0, 0.05, 0.15, 0.3):
        live = rng.choice(cats, p=[0.5 - move, 0.3, 0.2 + move], size=30_000)
        effects.append(compare(reference, pd.DataFrame({"c": live})).features[0].stats)
    for key in ("js", "psi", "chi2"):
        values = [e[key] for e in effects]
        assert values == sorted(values), key


def test_discrete_and_constant_columns_do_not_raise_false_alarms() -> None:
    rng = np.random.default_rng(7)

    def frame(rows: int) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "count": rng.integers(0, 5, size=rows),
                "flag": rng.integers(0, 2, size=rows),
                "constant": np.full(rows, 3.0),
            }
        )

    reference = profile_frame(frame(100_000))
    for rows in (1_000, 100_000):
        report = compare(reference, frame(rows))
        assert report.drifted == []
        assert all(f.effect < 0.03 for f in report.features)
    moved = frame(10_000)
    moved["constant"] = 3.5
    assert compare(reference, moved).drifted == ["constant"]


# -- categorical --------------------------------------------------------------------------


def test_categorical_shift_and_new_categories() -> None:
    rng = np.random.default_rng(8)
    cats = ["a", "b", "c"]
    reference = profile_frame(pd.DataFrame({"c": rng.choice(cats, p=[0.5, 0.3, 0.2], size=20_000)}))
    same = compare(reference, pd.DataFrame({"c": rng.choice(cats, p=[0.5, 0.3, 0.2], size=5_000)}))
    assert same.drifted == [] and same.features[0].new_categories == {}
    assert same.features[0].stats["js"] < 0.03

    moved = rng.choice([*cats, "d", "e"], p=[0.3, 0.3, 0.3, 0.07, 0.03], size=5_000)
    report = compare(reference, pd.DataFrame({"c": moved}))
    (feature,) = report.features
    assert report.drifted == ["c"] and feature.kind == "categorical"
    assert feature.method == "js" and feature.effect == feature.stats["js"] >= 0.1
    assert feature.p_value == feature.stats["chi2_p"] < 1e-10
    assert feature.new_categories == {
        "d": int((moved == "d").sum()),
        "e": int((moved == "e").sum()),
    }
    assert feature.reference["frequencies"] == reference["columns"]["c"]["frequencies"]
    assert feature.live["frequencies"]["d"] == int((moved == "d").sum())
    assert 0.0 <= feature.stats["js"] <= 1.0


def test_new_categories_are_not_claimed_when_the_reference_kept_only_its_top() -> None:
    values = [f"v{i:03d}" for i in range(TOP + 30) for _ in range(i + 1)]
    reference = profile_frame(pd.DataFrame({"c": values}))
    assert reference["columns"]["c"]["distinct"] > TOP
    live = pd.DataFrame({"c": ["v000", "v001", "never-seen"] * 10})
    (feature,) = compare(reference, live).features
    assert feature.new_categories == {}  # v000 was seen but fell out of the top list
    assert feature.live["frequencies"]["never-seen"] == 10


def test_categorical_methods_psi_and_chi2() -> None:
    rng = np.random.default_rng(9)
    reference = profile_frame(pd.DataFrame({"c": rng.choice(["a", "b"], size=10_000)}))
    live = pd.DataFrame({"c": rng.choice(["a", "b"], p=[0.8, 0.2], size=2_000)})
    psi = compare(reference, live, thresholds=Thresholds(method_categorical="psi")).features[0]
    assert psi.drifted and psi.p_value is None and psi.effect == psi.stats["psi"] >= 0.2
    chi2 = compare(reference, live, thresholds=Thresholds(method_categorical="chi2")).features[0]
    assert chi2.drifted and chi2.p_value == chi2.stats["chi2_p"]
    assert chi2.effect == chi2.stats["cramers_v"] and chi2.threshold == 0.0


# -- corners ------------------------------------------------------------------------------


def test_out_of_range_values_are_counted() -> None:
    reference = profile_frame(pd.DataFrame({"x": np.linspace(0.0, 10.0, 1_001)}))
    live = pd.DataFrame({"x": [-5.0, -0.001, 0.0, 5.0, 10.0, 10.5, 99.0, 3.0]})
    (feature,) = compare(reference, live).features
    assert feature.out_of_range == 4


def test_missing_values_are_counted_and_left_out() -> None:
    rng = np.random.default_rng(10)
    reference = profile_frame(
        pd.DataFrame({"x": rng.standard_normal(5_000), "c": rng.choice(["a", "b"], size=5_000)})
    )
    x = rng.standard_normal(1_000)
    c = rng.choice(["a", "b"], size=1_000).astype(object)
    clean = compare(reference, pd.DataFrame({"x": x, "c": c}))
    x_holes, c_holes = x.copy(), c.copy()
    x_holes[:100] = np.nan
    x_holes[100:110] = np.inf
    c_holes[:50] = None
    holes = pd.DataFrame({"x": np.append(x_holes, np.nan), "c": np.append(c_holes, None)})
    report = compare(reference, holes)
    x_drift, c_drift = report.features
    assert (x_drift.rows, x_drift.missing) == (1_001, 111)
    assert (c_drift.rows, c_drift.missing) == (1_001, 51)
    assert report.drifted == [] and clean.drifted == []
    kept = compare(reference, pd.DataFrame({"x": x[110:]}), columns=["x"]).features[0]
    assert x_drift.stats == kept.stats


def test_an_empty_window_drifts_nowhere(reference: dict[str, Any]) -> None:
    for live in (normal_frame(0, seed=1), pd.DataFrame(), None, {}):
        report = compare(reference, live, predictions=np.array([]))
        assert report.rows == 0
        assert report.drifted == [] and report.drift_share == 0.0
        assert not report.dataset_drift
        assert len(report.features) == 20
        assert all(not f.drifted and f.stats == {} for f in report.features)
        json.dumps(report.to_json(), allow_nan=False)


def test_missing_columns_are_visible_and_unknown_ones_skipped(reference: dict[str, Any]):
    live = normal_frame(1_000, seed=2).drop(columns=["x3"])
    live["extra"] = 1.0
    report = compare(reference, live, columns=["x3", "x4", "not-profiled"])
    assert [f.name for f in report.features] == ["x3", "x4"]
    absent = report.features[0]
    assert (absent.rows, absent.missing, absent.drifted) == (1_000, 1_000, False)
    assert absent.stats == {} and absent.live["percentiles"] == []
    assert len(compare(reference, live).features) == 20


def test_profiles_without_percentiles_still_work(reference: dict[str, Any]) -> None:
    old = json.loads(json.dumps(reference))
    for column in old["columns"].values():
        del column["percentiles"]
    live = normal_frame(50_000, seed=3, shifted=tuple(SHIFTED), shift=0.5)
    report = compare(old, live)
    assert report.drifted == SHIFTED
    feature = report.features[0]
    assert len(feature.reference["levels"]) == 11 and len(feature.live["percentiles"]) == 101
    new = compare(reference, live).features[0]
    for key in ("ks", "wasserstein"):
        assert feature.stats[key] == pytest.approx(new.stats[key], abs=0.02)
    assert compare(old, normal_frame(50_000, seed=4)).drifted == []


def test_predictions_are_compared_but_not_counted_in_the_share() -> None:
    rng = np.random.default_rng(11)
    frame = pd.DataFrame({"x": rng.standard_normal(20_000)})
    reference = profile_frame(frame, (frame["x"] > 0).astype(int).to_numpy())
    live = pd.DataFrame({"x": rng.standard_normal(5_000)})
    skewed = (rng.random(5_000) < 0.8).astype(int)
    report = compare(reference, live, predictions=skewed)
    assert report.drifted == [] and report.drift_share == 0.0
    assert report.prediction is not None and report.prediction.drifted
    assert report.prediction.name == "prediction" and report.prediction.rows == 5_000
    labels = profile_frame(frame, np.where(frame["x"] > 0, "yes", "no"))
    same = compare(labels, live, predictions=np.where(live["x"] > 0, "yes", "no"))
    assert same.prediction is not None and same.prediction.kind == "categorical"
    assert not same.prediction.drifted
    assert compare(labels, live).prediction is None


def test_numeric_methods_wasserstein_and_psi() -> None:
    rng = np.random.default_rng(12)
    reference = profile_frame(pd.DataFrame({"x": rng.standard_normal(20_000)}))
    live = pd.DataFrame({"x": rng.standard_normal(5_000) + 0.3})
    w = compare(reference, live, thresholds=Thresholds(method_numeric="wasserstein")).features[0]
    assert w.drifted and w.p_value is None and w.effect == pytest.approx(0.3, abs=0.05)
    psi = compare(reference, live, thresholds=Thresholds(method_numeric="psi")).features[0]
    assert not psi.drifted and psi.effect == psi.stats["psi"] < 0.2


def test_thresholds_are_checked() -> None:
    with pytest.raises(InvalidInputError, match="numeric drift method"):
        Thresholds(method_numeric="t-test")
    with pytest.raises(InvalidInputError, match="categorical drift method"):
        Thresholds(method_categorical="ks")


def test_the_report_is_strict_json(reference: dict[str, Any]) -> None:
    live = normal_frame(2_000, seed=5, shifted=("x0",), shift=1.0)
    live["x1"] = np.nan
    document = compare(reference, live).to_json()
    again = json.loads(json.dumps(document, allow_nan=False))
    assert again["drifted"] == ["x0"] and again["features"][1]["missing"] == 2_000
    assert set(again["features"][0]["stats"]) == {"ks", "ks_p", "wasserstein", "psi"}


# -- the statistics themselves ------------------------------------------------------------


def test_statistics_agree_with_scipy() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    special = pytest.importorskip("scipy.special")
    rng = np.random.default_rng(13)
    ref = pd.DataFrame(
        {"x": rng.exponential(size=40_000), "c": rng.choice(list("pqrs"), size=40_000)}
    )
    live = pd.DataFrame(
        {
            "x": rng.exponential(1.2, size=3_000),
            "c": rng.choice(list("pqrs"), p=[0.3, 0.3, 0.2, 0.2], size=3_000),
        }
    )
    x, c = compare(profile_frame(ref), live).features
    exact = scipy_stats.ks_2samp(ref["x"], live["x"])
    assert x.stats["ks"] == pytest.approx(exact.statistic, abs=0.01)
    wasserstein = scipy_stats.wasserstein_distance(ref["x"], live["x"]) / ref["x"].std(ddof=0)
    assert x.stats["wasserstein"] == pytest.approx(wasserstein, rel=0.1)
    table = np.vstack([ref["c"].value_counts().sort_index(), live["c"].value_counts().sort_index()])
    chi2 = scipy_stats.chi2_contingency(table, correction=False)
    assert c.stats["chi2"] == pytest.approx(chi2.statistic)
    assert c.stats["chi2_p"] == pytest.approx(chi2.pvalue)
    distance = pytest.importorskip("scipy.spatial.distance")
    p, q = table[0] / table[0].sum(), table[1] / table[1].sum()
    assert c.stats["js"] == pytest.approx(distance.jensenshannon(p, q, base=2))
    # The fallbacks used when scipy is not installed.
    for a in (0.5, 1.0, 2.5, 10.0, 100.0):
        for value in (0.01, 0.5, 3.0, 12.0, 80.0, 400.0):
            ours = drift_module._upper_regularized_gamma(a, value)
            assert ours == pytest.approx(float(special.gammaincc(a, value)), abs=1e-12)
    for lam in (0.3, 0.5, 1.0, 1.5, 2.5):
        n = 1e12  # large, so that Stephens' correction vanishes
        ours = drift_module._kolmogorov_sf(lam / math.sqrt(n), n)
        assert ours == pytest.approx(float(special.kolmogorov(lam)), abs=1e-6)


def test_importing_monitoring_does_not_import_pandas() -> None:
    code = "import sys, treadle.monitoring; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
