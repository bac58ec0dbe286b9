"""Client calls for deployments: specs, revisions, traffic, rollback and follow."""

from __future__ import annotations

from treadle.client.transport import Transport, segment
from treadle.store.records import DeploymentRecord, DeploymentRevisionRecord


class DeploymentsApi(Transport):
    def list_deployments(self) -> list[DeploymentRecord]:
        return self._get(list[DeploymentRecord], self._in_project("/deployments"))

    def get_deployment(self, name: str) -> DeploymentRecord:
        return self._get(DeploymentRecord, self._deployment(name))

    def list_revisions(self, name: str) -> list[DeploymentRevisionRecord]:
        """Every revision, oldest first; the last one is what is served now."""
        return self._get(list[DeploymentRevisionRecord], self._deployment(name, "/revisions"))

    def rollback(self, name: str) -> DeploymentRevisionRecord:
        """Back to the previous revision's versions, pinned there until `follow`."""
        return self._call(DeploymentRevisionRecord, "POST", self._deployment(name, "/rollback"))

    def follow(self, name: str) -> DeploymentRevisionRecord:
        """Follow the aliases again after a rollback."""
        return self._call(DeploymentRevisionRecord, "POST", self._deployment(name, "/follow"))

    def set_traffic(
        self, name: str, policy: str, *, candidate: str | None = None, canary: float = 0.1
    ) -> DeploymentRevisionRecord:
        """`single` (the primary alone), `canary` (the candidate takes `canary` of the
        requests) or `shadow` (the candidate sees copies and never answers)."""
        body = {"policy": policy, "candidate": candidate, "canary_weight": canary}
        return self._call(
            DeploymentRevisionRecord, "PUT", self._deployment(name, "/traffic"), json=body
        )

    def _deployment(self, name: str, path: str = "") -> str:
        return self._in_project(f"/deployments/{segment(name)}{path}")
