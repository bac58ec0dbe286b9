"""Why a run happened, in one sentence, from the cause recorded on it."""

from __future__ import annotations

import json
import time
from typing import Any

from treadle.store.records import EventRecord


def explain(cause: dict[str, Any] | None, event: EventRecord | None) -> str:
    """One sentence on why a run happened."""
    if not cause:
        return "it was started before runs recorded why"
    kind = cause.get("kind")
    if kind == "manual" and "trigger" not in cause:
        return f"{cause.get('by', 'someone')} started it"
    if kind == "schedule":
        due = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(float(cause["due_at"])))
        return (
            f"schedule {cause.get('schedule')!r} ({cause.get('cron')} {cause.get('timezone')}) "
            f"was due at {due}"
        )
    if kind == "external":
        return (
            f"{cause.get('executor', 'an outside executor')} job {cause.get('external_id')!r} "
            f"of pipeline {cause.get('pipeline')!r} recorded it (as {cause.get('by', 'someone')})"
        )
    if kind == "kubeflow":
        job, pipeline = cause.get("job"), cause.get("pipeline")
        return f"Kubeflow Pipelines job {job!r} of pipeline {pipeline!r} ran it"
    what = json.dumps(event.payload if event else cause.get("event", {}), sort_keys=True)
    return f"trigger {cause.get('trigger')!r} acted on a {kind} event: {what[:300]}"
