"""Client calls for schedules, triggers, events, webhooks and why runs happened."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from treadle.client.transport import Transport, segment
from treadle.store.records import (
    CreatedTrigger,
    EventRecord,
    Fire,
    ScheduleFireRecord,
    ScheduleRecord,
    TriggerFireRecord,
    TriggerRecord,
    Why,
)


class AutomationApi(Transport):
    def list_schedules(self) -> list[ScheduleRecord]:
        return self._get(list[ScheduleRecord], self._in_project("/schedules"))

    def create_schedule(
        self,
        name: str,
        pipeline: str,
        cron: str,
        *,
        timezone: str = "UTC",
        params: Mapping[str, str] | None = None,
        catchup: str = "skip",
        max_catchup: int = 10,
        concurrency: str = "allow",
    ) -> ScheduleRecord:
        """Run `pipeline`'s current version at the times of `cron` in `timezone`."""
        body = {
            "name": name,
            "pipeline": pipeline,
            "cron": cron,
            "timezone": timezone,
            "params": dict(params or {}),
            "catchup": catchup,
            "max_catchup": max_catchup,
            "concurrency": concurrency,
        }
        return self._call(ScheduleRecord, "POST", self._in_project("/schedules"), json=body)

    def get_schedule(self, name: str) -> ScheduleRecord:
        return self._get(ScheduleRecord, self._schedule(name))

    def pause_schedule(self, name: str) -> ScheduleRecord:
        return self._call(ScheduleRecord, "POST", self._schedule(name, "/pause"))

    def resume_schedule(self, name: str) -> ScheduleRecord:
        return self._call(ScheduleRecord, "POST", self._schedule(name, "/resume"))

    def delete_schedule(self, name: str) -> None:
        self._send("DELETE", self._schedule(name))

    def schedule_fires(self, name: str, limit: int = 50) -> list[ScheduleFireRecord]:
        return self._get(list[ScheduleFireRecord], self._schedule(name, "/fires"), limit=limit)

    def list_triggers(self) -> list[TriggerRecord]:
        return self._get(list[TriggerRecord], self._in_project("/triggers"))

    def create_trigger(
        self,
        name: str,
        kind: str,
        pipeline: str,
        *,
        params: Mapping[str, str] | None = None,
        filter: Mapping[str, str] | None = None,
    ) -> CreatedTrigger:
        """A trigger; for a webhook, the answer holds its secret (shown once) and URL."""
        body = {
            "name": name,
            "kind": kind,
            "pipeline": pipeline,
            "params": dict(params or {}),
            "filter": dict(filter or {}),
        }
        return self._call(CreatedTrigger, "POST", self._in_project("/triggers"), json=body)

    def get_trigger(self, name: str) -> TriggerRecord:
        return self._get(TriggerRecord, self._trigger(name))

    def set_trigger_enabled(self, name: str, enabled: bool) -> TriggerRecord:
        return self._call(
            TriggerRecord, "PUT", self._trigger(name, "/enabled"), json={"enabled": enabled}
        )

    def delete_trigger(self, name: str) -> None:
        self._send("DELETE", self._trigger(name))

    def fire_trigger(self, name: str, payload: Mapping[str, Any] | None = None) -> Fire:
        """Fire a trigger by hand with this payload."""
        return self._call(
            Fire, "POST", self._trigger(name, "/fire"), json={"payload": dict(payload or {})}
        )

    def trigger_fires(self, name: str, limit: int = 50) -> list[TriggerFireRecord]:
        return self._get(list[TriggerFireRecord], self._trigger(name, "/fires"), limit=limit)

    def list_events(self, kind: str | None = None, limit: int = 50) -> list[EventRecord]:
        return self._get(list[EventRecord], self._in_project("/events"), kind=kind, limit=limit)

    def why(self, run_id: str) -> Why:
        """Why a run happened: who started it, which schedule and due time, or which
        trigger and event."""
        return self._get(Why, self._run(run_id, "/why"))

    def deliver_webhook(
        self, hook: str, secret: str, payload: Any, *, timestamp: float | None = None
    ) -> Fire:
        """Send a signed delivery to a webhook trigger (`hook` is its path or id), as a
        sender would: the body is `payload` as JSON."""
        from treadle.automation.triggers import sign

        path = hook if hook.startswith("/") else f"/api/v1/hooks/{segment(hook)}"
        path = path.removeprefix("/api/v1")
        body = json.dumps(payload).encode()
        stamp = str(int(time.time() if timestamp is None else timestamp))
        headers = {
            "content-type": "application/json",
            "x-treadle-timestamp": stamp,
            "x-treadle-signature": sign(secret, stamp, body),
        }
        return self._call(Fire, "POST", path, content=body, headers=headers)

    def _schedule(self, name: str, path: str = "") -> str:
        return self._in_project(f"/schedules/{segment(name)}{path}")

    def _trigger(self, name: str, path: str = "") -> str:
        return self._in_project(f"/triggers/{segment(name)}{path}")
