"""Client calls for monitors, their windows and alerts, and the policies that act on
them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from treadle.client.transport import Transport, segment
from treadle.store.records import (
    AlertRecord,
    MonitorRecord,
    MonitorWindowRecord,
    PolicyRecord,
    PolicyRunRecord,
)


class MonitoringApi(Transport):
    def create_monitor(
        self,
        name: str,
        deployment: str,
        *,
        window_kind: str = "rows",
        window_size: int = 1000,
        thresholds: Mapping[str, float | str] | None = None,
        rules: Sequence[str] = (),
    ) -> MonitorRecord:
        """Watch a deployment's predictions in windows; `rules` raise alerts."""
        body = {
            "name": name,
            "deployment": deployment,
            "window_kind": window_kind,
            "window_size": window_size,
            "thresholds": dict(thresholds or {}),
            "rules": list(rules),
        }
        return self._call(MonitorRecord, "POST", self._in_project("/monitors"), json=body)

    def list_monitors(self) -> list[MonitorRecord]:
        return self._get(list[MonitorRecord], self._in_project("/monitors"))

    def get_monitor(self, name: str) -> MonitorRecord:
        return self._get(MonitorRecord, self._in_project(f"/monitors/{segment(name)}"))

    def delete_monitor(self, name: str) -> None:
        self._send("DELETE", self._in_project(f"/monitors/{segment(name)}"))

    def monitor_windows(self, name: str, limit: int = 100) -> list[MonitorWindowRecord]:
        """Newest first."""
        return self._get(
            list[MonitorWindowRecord],
            self._in_project(f"/monitors/{segment(name)}/windows"),
            limit=limit,
        )

    def list_alerts(
        self, monitor: str | None = None, state: str | None = None, limit: int = 100
    ) -> list[AlertRecord]:
        return self._get(
            list[AlertRecord],
            self._in_project("/alerts"),
            monitor=monitor,
            state=state,
            limit=limit,
        )

    # -- policies ---------------------------------------------------------------------

    def put_policy(self, spec: Mapping[str, Any], *, replace: bool = False) -> PolicyRecord:
        """Create (or with `replace` change) a policy from its document."""
        return self._call(
            PolicyRecord,
            "POST",
            self._in_project("/policies"),
            json={"spec": dict(spec), "replace": replace},
        )

    def list_policies(self) -> list[PolicyRecord]:
        return self._get(list[PolicyRecord], self._in_project("/policies"))

    def get_policy(self, name: str) -> PolicyRecord:
        return self._get(PolicyRecord, self._in_project(f"/policies/{segment(name)}"))

    def set_policy_enabled(self, name: str, enabled: bool) -> PolicyRecord:
        return self._call(
            PolicyRecord,
            "PUT",
            self._in_project(f"/policies/{segment(name)}/enabled"),
            json={"enabled": enabled},
        )

    def delete_policy(self, name: str) -> None:
        self._send("DELETE", self._in_project(f"/policies/{segment(name)}"))

    def policy_runs(
        self, policy: str | None = None, state: str | None = None, limit: int = 50
    ) -> list[PolicyRunRecord]:
        """What policies did, newest first, step by step."""
        return self._get(
            list[PolicyRunRecord],
            self._in_project("/policy-runs"),
            policy=policy,
            state=state,
            limit=limit,
        )

    def get_policy_run(self, run_id: str) -> PolicyRunRecord:
        return self._get(PolicyRunRecord, self._in_project(f"/policy-runs/{segment(run_id)}"))
