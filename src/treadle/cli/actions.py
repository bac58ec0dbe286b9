"""The changes commands make to the registry and to deployments, on the local home or
through a server's API: one interface, so each command has one code path.

Reading goes through `common.store()` (the store protocols, local or over the API);
changes go through `actions()`, because on a server they must pass its routes, which
check the caller's role and record who made them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from treadle.cli import common
from treadle.store.records import (
    AliasRecord,
    DeploymentRecord,
    DeploymentRevisionRecord,
    ModelVersionRecord,
)


class Gate(Protocol):
    """A gate condition that held: `registry.GateResult` here, `client.GateCheck` remotely."""

    @property
    def condition(self) -> str: ...
    @property
    def detail(self) -> str: ...


class Actions(Protocol):
    def set_alias(
        self, model: str, alias: str, version: int, require: Sequence[str]
    ) -> tuple[AliasRecord, Sequence[Gate]]: ...
    def promote(
        self, model: str, source: str, target: str, require: Sequence[str]
    ) -> tuple[AliasRecord, Sequence[Gate]]: ...
    def trust(self, model: str, version: int, trusted: bool) -> ModelVersionRecord: ...
    def deploy(
        self,
        ref: str,
        name: str,
        policy: str,
        candidate: str | None,
        canary: float,
        port: int | None,
    ) -> tuple[DeploymentRecord, DeploymentRevisionRecord]: ...
    def sync(self, deployment: DeploymentRecord) -> DeploymentRevisionRecord: ...
    def rollback(self, deployment: str) -> DeploymentRevisionRecord: ...
    def follow(self, deployment: str) -> DeploymentRevisionRecord: ...
    def set_traffic(
        self, deployment: str, policy: str, candidate: str | None, canary: float
    ) -> DeploymentRevisionRecord: ...


class LocalActions:
    """Straight to the home's store, as its owner."""

    def set_alias(
        self, model: str, alias: str, version: int, require: Sequence[str]
    ) -> tuple[AliasRecord, Sequence[Gate]]:
        from treadle.registry import set_alias

        return set_alias(
            f"{model}@{version}", alias, require_conditions=require, store=common.local_store()
        )

    def promote(
        self, model: str, source: str, target: str, require: Sequence[str]
    ) -> tuple[AliasRecord, Sequence[Gate]]:
        from treadle.registry import promote

        return promote(
            model,
            source=source,
            target=target,
            require_conditions=require,
            store=common.local_store(),
        )

    def trust(self, model: str, version: int, trusted: bool) -> ModelVersionRecord:
        from treadle.registry import resolve

        store = common.local_store()
        _, record = resolve(store, common.project_id(), f"{model}@{version}")
        return store.models.set_trusted(record.id, trusted)

    def deploy(
        self,
        ref: str,
        name: str,
        policy: str,
        candidate: str | None,
        canary: float,
        port: int | None,
    ) -> tuple[DeploymentRecord, DeploymentRevisionRecord]:
        from treadle.registry import parse_ref
        from treadle.serving import deployments as ops

        spec = ops.make_spec(
            parse_ref(ref), policy=policy, candidate=candidate, canary_weight=canary, port=port
        )
        return ops.deploy(common.local_store(), common.project_id(), name, spec)

    def sync(self, deployment: DeploymentRecord) -> DeploymentRevisionRecord:
        from treadle.serving import deployments as ops

        return ops.sync(common.local_store(), common.project_id(), deployment)

    def rollback(self, deployment: str) -> DeploymentRevisionRecord:
        from treadle.serving import deployments as ops

        return ops.rollback(common.local_store(), common.project_id(), deployment)

    def follow(self, deployment: str) -> DeploymentRevisionRecord:
        from treadle.serving import deployments as ops

        return ops.follow(common.local_store(), common.project_id(), deployment)

    def set_traffic(
        self, deployment: str, policy: str, candidate: str | None, canary: float
    ) -> DeploymentRevisionRecord:
        from treadle.serving import deployments as ops

        _, revision = ops.set_traffic(
            common.local_store(),
            common.project_id(),
            deployment,
            policy,
            candidate=candidate,
            canary_weight=canary,
        )
        return revision


class RemoteActions:
    """Through the server's routes, as the user TREADLE_TOKEN belongs to."""

    def set_alias(
        self, model: str, alias: str, version: int, require: Sequence[str]
    ) -> tuple[AliasRecord, Sequence[Gate]]:
        moved = common.client().set_alias(model, alias, version, require=require)
        return moved.alias, moved.gates

    def promote(
        self, model: str, source: str, target: str, require: Sequence[str]
    ) -> tuple[AliasRecord, Sequence[Gate]]:
        moved = common.client().promote(model, source=source, target=target, require=require)
        return moved.alias, moved.gates

    def trust(self, model: str, version: int, trusted: bool) -> ModelVersionRecord:
        return common.client().set_trusted(model, version, trusted)

    def deploy(
        self,
        ref: str,
        name: str,
        policy: str,
        candidate: str | None,
        canary: float,
        port: int | None,
    ) -> tuple[DeploymentRecord, DeploymentRevisionRecord]:
        done = common.client().deploy(
            ref, name, policy=policy, candidate=candidate, canary=canary, port=port
        )
        return done.deployment, done.revision

    def sync(self, deployment: DeploymentRecord) -> DeploymentRevisionRecord:
        return common.client().sync_deployment(deployment.name)

    def rollback(self, deployment: str) -> DeploymentRevisionRecord:
        return common.client().rollback(deployment)

    def follow(self, deployment: str) -> DeploymentRevisionRecord:
        return common.client().follow(deployment)

    def set_traffic(
        self, deployment: str, policy: str, candidate: str | None, canary: float
    ) -> DeploymentRevisionRecord:
        return common.client().set_traffic(deployment, policy, candidate=candidate, canary=canary)


def actions() -> Actions:
    return RemoteActions() if common.remote() else LocalActions()
