"""The closed loop through `treadle demo`, for the regressor: a different pipeline, model
and thresholds go through the same loop by their policy alone (the classifier's loop runs
in tests/integration/test_loop_api.py and in `make demo`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cli_support import treadle

pytestmark = pytest.mark.slow

REGRESSION = Path("examples/loop/regression")


def test_the_regressor_goes_through_the_loop_by_its_policy(tmp_path: Path) -> None:
    result = treadle(
        tmp_path / "cli-home",
        "demo",
        "--pipeline",
        str(REGRESSION / "pipeline.py"),
        "--policy",
        str(REGRESSION / "policy.yaml"),
        "--dataset",
        "diabetes",
        "--home",
        str(tmp_path / "platform"),
        timeout=240,
    )
    assert result.returncode == 0, str(result)
    out = " ".join(result.stdout.split())
    # every stage ran and said what happened
    for stage in (
        "start the platform",
        "build and deploy the training pipeline",
        "train and register the first model",
        "progression-regressor@1 is champion",
        "the world changes: the drift is detected",
        "alert drift (drift: drift_share > 0.3 for 2 windows)",
        "retrain, gate, canary, promote or roll back",
    ):
        assert stage in out, str(result)
    # the policy's steps, in order: the event, the run on live data, the gate, the canary
    steps = re.findall(r"^\s+(event|run|register|canary|promote)\s+(\w+)", result.stdout, re.M)
    assert [s for s, _ in steps][:5] == ["event", "run", "run", "register", "canary"], steps
    assert steps[-1][0] == "promote" and steps[-1][1] in ("done", "rolled_back"), steps
    assert "rmse <= 80" in out and "live rmse: candidate" in out
    report = re.search(r"report: (\S+)", out)
    assert report is not None
    page = Path(report.group(1)).read_text()
    assert "<svg" in page and "progression-watch" in page
    # the platform's home kept the run that retrained on live data, with why it ran
    runs = sorted((tmp_path / "platform").glob("**/treadle.db"))
    assert runs, "the platform's database is where --home put it"
