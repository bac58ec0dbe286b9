"""Monitoring: how live requests compare with what a model version was trained on.

`compare(profile, live_frame, predictions)` gives a `DriftReport` against the reference
profile a model version keeps (`treadle.models.profile.profile_frame`). Pure functions;
monitors and alert rules are built on top of them.
"""

from treadle.monitoring.drift import DriftReport, FeatureDrift, Thresholds, compare

__all__ = ["DriftReport", "FeatureDrift", "Thresholds", "compare"]
