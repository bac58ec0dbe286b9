"""The model registry and deployment protocols over the API. Alias moves and trust go
through the server's routes (which record who asked); registering versions and creating
deployments stay local for now and say so."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from treadle.client.index import Index, unsupported
from treadle.store.records import (
    AliasEventRecord,
    AliasRecord,
    DeploymentRecord,
    DeploymentRevisionRecord,
    ModelVersionRecord,
    RegisteredModelRecord,
)


class RestModelRegistryStore:
    def __init__(self, index: Index) -> None:
        self._index = index

    def ensure_model(self, project_id: str, name: str, user: str) -> RegisteredModelRecord:
        unsupported("registering a model")

    def get_model(self, project_id: str, name: str) -> RegisteredModelRecord:
        client = self._index.in_project(project_id)
        return self._index.model(client, client.get_model(name))

    def list_models(self, project_id: str) -> list[RegisteredModelRecord]:
        client = self._index.in_project(project_id)
        return [self._index.model(client, m) for m in client.list_models()]

    def add_version(
        self,
        model_id: str,
        *,
        flavor: str,
        manifest_sha: str,
        signature: Mapping[str, Any],
        metrics: Mapping[str, float],
        run_id: str | None,
        step_run_id: str | None,
        trusted: bool,
        user: str,
        description: str = "",
    ) -> ModelVersionRecord:
        unsupported("registering a model version")

    def get_version(self, model_id: str, version: int) -> ModelVersionRecord:
        client, name = self._index.model_by_id(model_id)
        return client.get_version(name, version)

    def get_version_by_id(self, version_id: str) -> ModelVersionRecord:
        return self._index.client.get_version_by_id(version_id)

    def list_versions(self, model_id: str) -> list[ModelVersionRecord]:
        client, name = self._index.model_by_id(model_id)
        return client.list_versions(name)

    def set_trusted(self, version_id: str, trusted: bool) -> ModelVersionRecord:
        version = self.get_version_by_id(version_id)
        client, name = self._index.model_by_id(version.model_id)
        return client.set_trusted(name, version.version, trusted)

    def set_alias(
        self, model_id: str, alias: str, version_id: str, *, user: str, reason: str
    ) -> AliasRecord:
        """Moved by the server, which records its caller (not `user`) as who moved it."""
        client, name = self._index.model_by_id(model_id)
        version = self.get_version_by_id(version_id)
        return client.set_alias(name, alias, version.version, reason=reason).alias

    def delete_alias(self, model_id: str, alias: str, *, user: str, reason: str) -> None:
        client, name = self._index.model_by_id(model_id)
        client.delete_alias(name, alias, reason=reason)

    def get_alias(self, model_id: str, alias: str) -> AliasRecord:
        client, name = self._index.model_by_id(model_id)
        return client.get_alias(name, alias)

    def list_aliases(self, model_id: str) -> list[AliasRecord]:
        client, name = self._index.model_by_id(model_id)
        return client.list_aliases(name)

    def alias_history(self, model_id: str, alias: str | None = None) -> list[AliasEventRecord]:
        client, name = self._index.model_by_id(model_id)
        return client.alias_history(name, alias)


class RestDeploymentStore:
    def __init__(self, index: Index) -> None:
        self._index = index

    def create_deployment(
        self, project_id: str, name: str, model_id: str, spec: Mapping[str, Any], user: str
    ) -> DeploymentRecord:
        unsupported("creating a deployment")

    def update_spec(self, deployment_id: str, spec: Mapping[str, Any]) -> DeploymentRecord:
        unsupported("changing a deployment's spec directly")

    def get_deployment(self, project_id: str, name: str) -> DeploymentRecord:
        client = self._index.in_project(project_id)
        return self._index.deployment(client, client.get_deployment(name))

    def list_deployments(self, project_id: str) -> list[DeploymentRecord]:
        client = self._index.in_project(project_id)
        return [self._index.deployment(client, d) for d in client.list_deployments()]

    def add_revision(
        self,
        deployment_id: str,
        targets: Sequence[Mapping[str, Any]],
        *,
        reason: str,
        user: str,
    ) -> DeploymentRevisionRecord:
        unsupported("recording a deployment revision directly")

    def current_revision(self, deployment_id: str) -> DeploymentRevisionRecord | None:
        revisions = self.list_revisions(deployment_id)
        return revisions[-1] if revisions else None

    def list_revisions(self, deployment_id: str) -> list[DeploymentRevisionRecord]:
        client, name = self._index.deployment_by_id(deployment_id)
        return client.list_revisions(name)
