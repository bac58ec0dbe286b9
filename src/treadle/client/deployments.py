"""Client calls for deployments: specs, revisions, traffic, rollback and follow, and
the true labels of their predictions."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

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

    def send_feedback(
        self,
        name: str,
        request_id: str | None = None,
        label: Any = None,
        *,
        row: int | None = None,
        labels: Sequence[Any] | None = None,
        feedback: Sequence[Mapping[str, Any]] | None = None,
    ) -> int:
        """True labels of requests deployment `name` answered, passed on to the model
        server `treadle up` runs for it: `label` for `request_id` (and `row` for one row
        of a request of several), `labels` for every row of it, or `feedback`, many such
        objects (`{"request_id": ..., "label": ...}`). Answers how many were accepted.

        An id the model server did not answer recently is a NotFoundError, a label of
        the wrong type an InvalidInputError, a deployment without a port a
        ConflictError, a model server that does not answer a StoreUnavailableError."""
        given = {"request_id": request_id, "row": row, "label": label}
        body: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        if labels is not None:
            body["labels"] = list(labels)
        if feedback is not None:
            body["feedback"] = [dict(item) for item in feedback]
        answer = self._call(dict[str, int], "POST", self._deployment(name, "/feedback"), json=body)
        return answer["accepted"]

    def _deployment(self, name: str, path: str = "") -> str:
        return self._in_project(f"/deployments/{segment(name)}{path}")
