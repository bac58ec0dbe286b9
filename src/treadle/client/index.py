"""The store protocols pass ids around; the API addresses projects, models and
deployments by name. The index remembers which name (and which project's client) each
id seen so far belongs to, and looks up the ones it has not seen."""

from __future__ import annotations

from typing import NoReturn

from treadle.client.client import Client
from treadle.errors import ConfigError, NotFoundError
from treadle.store.records import (
    DeploymentRecord,
    ExperimentRecord,
    ProjectRecord,
    RegisteredModelRecord,
)


def unsupported(what: str) -> NoReturn:
    raise ConfigError(
        f"{what} is not available against a treadle server yet",
        "unset TREADLE_URL (and drop --url) to work on the local home",
    )


class Index:
    def __init__(self, client: Client) -> None:
        self.client = client
        self._projects: dict[str, str] = {}
        self._experiments: dict[str, ExperimentRecord] = {}
        self._models: dict[str, tuple[Client, str]] = {}
        self._deployments: dict[str, tuple[Client, str]] = {}

    # -- projects -----------------------------------------------------------------------

    def project(self, record: ProjectRecord) -> ProjectRecord:
        self._projects[record.id] = record.name
        return record

    def in_project(self, project_id: str | None) -> Client:
        """The client addressing the project with this id (the bound one for None)."""
        if project_id is None:
            return self.client
        if project_id not in self._projects:
            for p in self.client.list_projects():
                self.project(p)
        name = self._projects.get(project_id)
        if name is None:
            raise NotFoundError(f"no project with id {project_id!r}")
        return self.client if name == self.client.project else self.client.for_project(name)

    # -- experiments --------------------------------------------------------------------

    def experiment(self, record: ExperimentRecord) -> ExperimentRecord:
        self._experiments[record.id] = record
        return record

    def experiment_by_id(
        self, experiment_id: str, project_id: str | None = None
    ) -> ExperimentRecord:
        if experiment_id not in self._experiments:
            for s in self.in_project(project_id).list_experiments():
                self.experiment(s.experiment)
        found = self._experiments.get(experiment_id)
        if found is None:
            raise NotFoundError(f"no experiment with id {experiment_id!r}")
        return found

    # -- models and deployments ---------------------------------------------------------

    def model(self, client: Client, record: RegisteredModelRecord) -> RegisteredModelRecord:
        self._models[record.id] = (client, record.name)
        return record

    def model_by_id(self, model_id: str) -> tuple[Client, str]:
        if model_id not in self._models:
            for m in self.client.list_models():
                self.model(self.client, m)
        if model_id not in self._models:
            raise NotFoundError(
                f"no registered model with id {model_id!r}", "list them with `treadle models list`"
            )
        return self._models[model_id]

    def deployment(self, client: Client, record: DeploymentRecord) -> DeploymentRecord:
        self._deployments[record.id] = (client, record.name)
        return record

    def deployment_by_id(self, deployment_id: str) -> tuple[Client, str]:
        if deployment_id not in self._deployments:
            for d in self.client.list_deployments():
                self.deployment(self.client, d)
        if deployment_id not in self._deployments:
            raise NotFoundError(f"no deployment with id {deployment_id!r}")
        return self._deployments[deployment_id]
