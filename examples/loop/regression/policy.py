"""The regressor's loop in Python: the same policy as policy.yaml, with the gate's
threshold in a variable (PROGRESSION_MAX_RMSE overrides it).

    treadle policies apply examples/loop/regression/policy.py
    treadle demo --pipeline examples/loop/regression/pipeline.py \\
                 --policy examples/loop/regression/policy.py --dataset diabetes
"""

from __future__ import annotations

import os

from treadle.loop import canary, define_policy, from_event, on_alert, promote, register, retrain

MAX_RMSE = float(os.environ.get("PROGRESSION_MAX_RMSE", "80"))

policy = define_policy(
    "refit-on-drift",
    on=on_alert(monitor="progression-watch", alert="drift"),
    # retrain on the labelled live data the deployment saw since the drift began
    run=retrain(
        "training",
        params={"deployment": from_event("deployment"), "since": from_event("window.start")},
    ),
    register=register(
        "progression-regressor", alias="challenger", require=[f"rmse <= {MAX_RMSE:g}"]
    ),
    canary=canary("progression-api", percent=30, requests=120, timeout=120),
    # lower is better: the challenger wins at or below the champion's live rmse
    promote=promote(alias="champion", metric="rmse", margin=0.0),
)
