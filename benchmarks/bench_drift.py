"""Drift benchmark: `treadle.monitoring.compare` on 100,000 x 20 numeric rows, side by
side with a naive per-column scipy KS test and with Evidently's DataDriftPreset.

The data (numpy seed 0): a reference of 100,000 rows x 20 standard normal columns and a
live window of 100,000 rows from the same distribution with columns x0..x4 shifted by
+0.5 (half a standard deviation). The reference profile is computed once and timed on
its own (it happens at training time); `compare` is timed 5 times (best and median)
and must flag exactly x0..x4. Then unshifted live windows of 10^4, 10^5 and 10^6 rows,
where nothing may be flagged.

Prints one JSON object per line. Evidently is not a dependency of treadle: it lives in
a virtualenv of its own, benchmarks/.venv-evidently, created on the first run; it
reads the same frames from Parquet. If it cannot be installed, a line says why and the
rest runs without it.

    .venv/bin/python benchmarks/bench_drift.py [--no-evidently] [--evidently-million]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from treadle.models.profile import profile_frame
from treadle.monitoring import compare

HERE = Path(__file__).resolve().parent
EVIDENTLY_VENV = HERE / ".venv-evidently"
# Evidently 0.7 imports a pandas internal that pandas 3 removed.
EVIDENTLY_PACKAGES = ["evidently", "pandas<3", "numpy", "pyarrow"]
EVIDENTLY_INSTALL_TIMEOUT_S = 1800.0
EVIDENTLY_REPEATS = 3
NO_TELEMETRY = {"DO_NOT_TRACK": "1"}

ROWS, FEATURES, SEED = 100_000, 20, 0
COLUMNS = [f"x{i}" for i in range(FEATURES)]
SHIFTED = COLUMNS[:5]
SHIFT = 0.5  # in standard deviations of the reference (which is N(0, 1))
REPEATS = 5
COMPARE_TARGET_S = 0.3
FALSE_ALARM_ROWS = (10_000, 100_000, 1_000_000)
SPEEDUP_TARGET = 20.0
NAIVE_ALPHA = 0.05


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def timed(fn: Any, repeats: int) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def make_frames() -> tuple[pd.DataFrame, pd.DataFrame, dict[int, pd.DataFrame]]:
    rng = np.random.default_rng(SEED)
    reference = pd.DataFrame(rng.standard_normal((ROWS, FEATURES)), columns=COLUMNS)
    live = pd.DataFrame(rng.standard_normal((ROWS, FEATURES)), columns=COLUMNS)
    live[SHIFTED] += SHIFT
    unshifted = {
        rows: pd.DataFrame(rng.standard_normal((rows, FEATURES)), columns=COLUMNS)
        for rows in FALSE_ALARM_ROWS
    }
    return reference, live, unshifted


# -- treadle ------------------------------------------------------------------------------


def bench_treadle(
    reference: pd.DataFrame, live: pd.DataFrame, unshifted: dict[int, pd.DataFrame]
) -> dict[str, float]:
    start = time.perf_counter()
    profile = profile_frame(reference)
    profile_s = time.perf_counter() - start
    emit(
        benchmark="drift_reference_profile_100k_x_20",
        seconds=round(profile_s, 4),
        note="profile_frame once, at training time; not part of compare",
        target_s=None,
        meets_target=None,
    )

    compare(profile, live)  # one untimed call, so one-off imports stay out
    times, report = timed(lambda: compare(profile, live), REPEATS)
    best, median = min(times), statistics.median(times)
    emit(
        benchmark="drift_compare_100k_x_20",
        best_s=round(best, 4),
        median_s=round(median, 4),
        runs=REPEATS,
        target_s=COMPARE_TARGET_S,
        meets_target=median <= COMPARE_TARGET_S,
    )
    emit(
        benchmark="drift_flags_100k_x_20",
        shift=f"+{SHIFT} std on {', '.join(SHIFTED)} (numpy seed {SEED})",
        flagged=report.drifted,
        expected=SHIFTED,
        ks_of_shifted=[round(f.effect, 4) for f in report.features if f.name in SHIFTED],
        max_ks_of_others=round(max(f.effect for f in report.features if f.name not in SHIFTED), 4),
        dataset_drift=report.dataset_drift,
        target="exactly the shifted columns",
        meets_target=report.drifted == SHIFTED,
    )
    for rows, frame in unshifted.items():
        times, report = timed(lambda frame=frame: compare(profile, frame), 3 if rows < 10**6 else 1)
        emit(
            benchmark=f"drift_false_alarms_{rows}_rows",
            flagged=report.drifted,
            false_alarms=len(report.drifted),
            max_ks=round(max(f.effect for f in report.features), 4),
            compare_best_s=round(min(times), 4),
            target=0,
            meets_target=not report.drifted,
        )
    return {"compare_best_s": best, "compare_median_s": median, "profile_s": profile_s}


def bench_naive_scipy(
    reference: pd.DataFrame, live: pd.DataFrame, unshifted: dict[int, pd.DataFrame]
) -> None:
    """Two-sample KS per column at p < 0.05, no effect size, no correction: for reference."""
    try:
        from scipy.stats import ks_2samp
    except ImportError:
        emit(benchmark="drift_naive_scipy_ks", skipped="scipy is not installed")
        return
    for label, frame in [("shifted_100000", live)] + [(str(r), f) for r, f in unshifted.items()]:
        start = time.perf_counter()
        flagged = [c for c in COLUMNS if ks_2samp(reference[c], frame[c]).pvalue < NAIVE_ALPHA]
        emit(
            benchmark=f"drift_naive_scipy_ks_{label}",
            rule=f"scipy.stats.ks_2samp per column, p < {NAIVE_ALPHA}",
            flagged=flagged,
            false_alarms=len(set(flagged) - set(SHIFTED if frame is live else [])),
            seconds=round(time.perf_counter() - start, 3),
            target_s=None,
            meets_target=None,
        )


# -- Evidently ----------------------------------------------------------------------------

EVIDENTLY_SCRIPT = r'''
import json, statistics, sys, time
import pandas as pd
import evidently

try:  # Evidently >= 0.7
    from evidently import Report
    from evidently.presets import DataDriftPreset
    LEGACY = False
except ImportError:  # the API before 0.7
    from evidently.report import Report
    from evidently.metric_preset import DataDriftPreset
    LEGACY = True


def run(reference, current, include_tests=False):
    if LEGACY:
        report = Report(metrics=[DataDriftPreset()])
        report.run(reference_data=reference, current_data=current)
        return report
    return Report(metrics=[DataDriftPreset()], include_tests=include_tests).run(
        current_data=current, reference_data=reference
    )


def flagged(reference, current):
    """Evidently's own verdict per column (one more run, with its tests)."""
    result = run(reference, current, include_tests=True)
    if LEGACY:
        for metric in result.as_dict()["metrics"]:
            by_column = metric["result"].get("drift_by_columns")
            if by_column:
                return sorted(c for c, r in by_column.items() if r["drift_detected"]), {}
        return [], {}
    document = result.dict()
    methods = {
        m["config"]["column"]: m["config"].get("method")
        for m in document["metrics"]
        if m["config"].get("column")
    }
    prefix = "Value Drift for column "
    failed = [
        t["name"][len(prefix):]
        for t in document["tests"]
        if t["name"].startswith(prefix) and t["status"] == "FAIL"
    ]
    return failed, methods


args = json.loads(sys.argv[1])
reference = pd.read_parquet(args["reference"])
for case in args["cases"]:
    current = pd.read_parquet(case["path"])
    times = []
    for _ in range(case["repeats"]):
        start = time.perf_counter()
        run(reference, current)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    columns, methods = flagged(reference, current)
    verdict_s = time.perf_counter() - start
    print(json.dumps({
        "case": case["name"],
        "version": evidently.__version__,
        "api": "legacy" if LEGACY else "new",
        "times": times,
        "verdict_run_s": verdict_s,
        "flagged": sorted(columns, key=lambda c: int(c[1:])),
        "methods": sorted(set(methods.values())),
    }), flush=True)
'''


def ensure_evidently() -> tuple[Path | None, str]:
    """The venv's python and Evidently's version, or None and why it could not be had."""
    python = EVIDENTLY_VENV / "bin" / "python"
    probe = [str(python), "-c", "import evidently, pyarrow; print(evidently.__version__)"]
    env = {**os.environ, **NO_TELEMETRY}

    def probe_ok() -> str | None:
        if not python.exists():
            return None
        proc = subprocess.run(probe, capture_output=True, text=True, env=env)
        return proc.stdout.strip() if proc.returncode == 0 else None

    version = probe_ok()
    if version:
        return python, version
    if not python.exists():
        base = shutil.which("python3") or sys.executable
        proc = subprocess.run(
            [base, "-m", "venv", str(EVIDENTLY_VENV)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            return None, f"python3 -m venv failed: {proc.stderr.strip()[-500:]}"
    cmd = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    try:
        proc = subprocess.run(
            [*cmd, *EVIDENTLY_PACKAGES],
            capture_output=True,
            text=True,
            env=env,
            timeout=EVIDENTLY_INSTALL_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return None, f"pip install evidently took over {EVIDENTLY_INSTALL_TIMEOUT_S:.0f} s"
    version = probe_ok()
    if version:
        return python, version
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line] or [proc.stderr]
    return None, f"pip install {' '.join(EVIDENTLY_PACKAGES)} failed: " + " | ".join(errors)[-800:]


def bench_evidently(
    reference: pd.DataFrame,
    live: pd.DataFrame,
    unshifted: dict[int, pd.DataFrame],
    ours: dict[str, float],
    million: bool,
) -> None:
    python, version = ensure_evidently()
    if python is None:
        emit(benchmark="drift_evidently", skipped=version, meets_target=None)
        return
    with tempfile.TemporaryDirectory(prefix="treadle-bench-drift-") as tmp:
        folder = Path(tmp)
        reference.to_parquet(folder / "reference.parquet")
        cases = [{"name": "shifted_100000", "frame": live, "repeats": EVIDENTLY_REPEATS}]
        for rows, frame in unshifted.items():
            if rows < 10**6 or million:
                cases.append({"name": f"unshifted_{rows}", "frame": frame, "repeats": 0})
        for case in cases:
            case["path"] = str(folder / f"{case['name']}.parquet")
            case.pop("frame").to_parquet(case["path"])
        script = folder / "evidently_drift.py"
        script.write_text(EVIDENTLY_SCRIPT)
        args = {"reference": str(folder / "reference.parquet"), "cases": cases}
        proc = subprocess.Popen(
            [str(python), str(script), json.dumps(args)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **NO_TELEMETRY},
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            result = json.loads(line)
            report_evidently(result, ours)
        if proc.wait() != 0:
            raise SystemExit(f"the Evidently script failed (exit {proc.returncode})")


def report_evidently(result: dict[str, Any], ours: dict[str, float]) -> None:
    name, flagged = result["case"], result["flagged"]
    common = {
        "evidently": result["version"],
        "api": result["api"],
        "methods": result["methods"],
        "flagged": flagged,
    }
    if name != "shifted_100000":
        emit(
            benchmark=f"drift_evidently_false_alarms_{name.split('_')[1]}_rows",
            **common,
            false_alarms=len(flagged),
            seconds=round(result["verdict_run_s"], 3),
            target=None,
            meets_target=None,
        )
        return
    times = result["times"]
    best, median = min(times), statistics.median(times)
    speedup = best / ours["compare_best_s"]
    emit(
        benchmark="drift_evidently_100k_x_20",
        **common,
        flagged_exactly_shifted=flagged == SHIFTED,
        best_s=round(best, 3),
        median_s=round(median, 3),
        runs=len(times),
        speedup_best=round(speedup, 1),
        speedup_median=round(median / ours["compare_median_s"], 1),
        speedup_with_profile=round(best / (ours["compare_best_s"] + ours["profile_s"]), 1),
        target_speedup=SPEEDUP_TARGET,
        meets_target=speedup >= SPEEDUP_TARGET,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-evidently", action="store_true", help="skip Evidently")
    parser.add_argument(
        "--evidently-million",
        action="store_true",
        help="also run Evidently on the unshifted 10^6-row window (about a minute)",
    )
    args = parser.parse_args()
    reference, live, unshifted = make_frames()
    ours = bench_treadle(reference, live, unshifted)
    bench_naive_scipy(reference, live, unshifted)
    if not args.no_evidently:
        bench_evidently(reference, live, unshifted, ours, args.evidently_million)


if __name__ == "__main__":
    main()
