"""Client calls for deployments: specs, revisions, traffic, rollback and follow."""

from __future__ import annotations

import dataclasses

from treadle.client.transport import Transport, segment
from treadle.store.records import DeploymentRecord, DeploymentRevisionRecord


@dataclasses.dataclass(frozen=True)
class Deployed:
    """A deployment as `deploy` left it, and the revision it serves."""

    deployment: DeploymentRecord
    revision: DeploymentRevisionRecord


class DeploymentsApi(Transport):
    def list_deployments(self) -> list[DeploymentRecord]:
        return self._get(list[DeploymentRecord], self._in_project("/deployments"))

    def get_deployment(self, name: str) -> DeploymentRecord:
        return self._get(DeploymentRecord, self._deployment(name))

    def deploy(
        self,
        ref: str,
        name: str,
        *,
        policy: str = "single",
        candidate: str | None = None,
        canary: float = 0.1,
        port: int | None = None,
    ) -> Deployed:
        """Create deployment `name` following `ref` (`churn@champion`, `churn@3`), or
        change what it follows and its policy: `single`, `canary` (`candidate` takes
        `canary` of the requests) or `shadow` (`candidate` sees copies). With `port`, the
        server's deployment controller runs its model server there."""
        body = {
            "ref": ref,
            "policy": policy,
            "candidate": candidate,
            "canary_weight": canary,
            "port": port,
        }
        return self._call(Deployed, "PUT", self._deployment(name), json=body)

    def list_revisions(self, name: str) -> list[DeploymentRevisionRecord]:
        """Every revision, oldest first; the last one is what is served now."""
        return self._get(list[DeploymentRevisionRecord], self._deployment(name, "/revisions"))

    def sync_deployment(self, name: str) -> DeploymentRevisionRecord:
        """The revision to serve now, recorded first if an alias the deployment follows
        has moved (what a model server run away from the control plane polls)."""
        return self._call(DeploymentRevisionRecord, "POST", self._deployment(name, "/sync"))

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
