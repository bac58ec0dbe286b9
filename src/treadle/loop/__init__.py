"""The closed loop: policies that turn alerts into retraining, gates, canaries and
promotions (or rollbacks), every step recorded.

A policy is written in YAML, or in Python with the functions here:

    from treadle.loop import canary, define_policy, from_event, on_alert, promote
    from treadle.loop import register, retrain

    policy = define_policy(
        "refit-on-drift",
        on=on_alert(monitor="progression-watch", alert="drift"),
        run=retrain("training", params={"since": from_event("window.start")}),
        register=register("progression-regressor", require=["rmse <= 80"]),
        canary=canary("progression-api", percent=30, requests=120, timeout=120),
        promote=promote(metric="rmse"),
    )
"""

from treadle.loop.builder import (
    CanarySpec,
    OnSpec,
    PolicySpec,
    PromoteSpec,
    RegisterSpec,
    RunSpec,
    canary,
    define_policy,
    from_event,
    on_alert,
    on_event,
    promote,
    register,
    retrain,
)

__all__ = [
    "CanarySpec",
    "OnSpec",
    "PolicySpec",
    "PromoteSpec",
    "RegisterSpec",
    "RunSpec",
    "canary",
    "define_policy",
    "from_event",
    "on_alert",
    "on_event",
    "promote",
    "register",
    "retrain",
]
