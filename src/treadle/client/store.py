"""A store over a treadle server: the same protocols the local store implements, read
through the API, so that commands and code written against a `StoreView` work on a
home or a server alike."""

from __future__ import annotations

import dataclasses

from treadle.client.client import Client
from treadle.client.index import Index
from treadle.client.objects import RemoteObjects
from treadle.client.store_registry import RestDeploymentStore, RestModelRegistryStore
from treadle.client.store_runs import (
    RestArtifactCatalog,
    RestPipelineStore,
    RestProjectStore,
    RestRunStore,
    RestTrackingStore,
)
from treadle.config import Settings, load_settings
from treadle.store.protocols import (
    ArtifactCatalog,
    DeploymentStore,
    ModelRegistryStore,
    ObjectReader,
    PipelineStore,
    ProjectStore,
    RunStore,
    TrackingStore,
)


@dataclasses.dataclass
class RemoteStore:
    """Shaped like `treadle.store.Store` for reading; its `client` does the writes."""

    settings: Settings
    client: Client
    objects: ObjectReader
    projects: ProjectStore
    pipelines: PipelineStore
    runs: RunStore
    artifacts: ArtifactCatalog
    tracking: TrackingStore
    models: ModelRegistryStore
    deployments: DeploymentStore

    def close(self) -> None:
        self.client.close()


def remote_store(client: Client | None = None, settings: Settings | None = None) -> RemoteStore:
    """The store of the server `client` talks to (by default one for TREADLE_URL,
    TREADLE_TOKEN and TREADLE_PROJECT)."""
    settings = settings or load_settings()
    client = client or Client(settings.url, settings.token, project=settings.project)
    index = Index(client)
    return RemoteStore(
        settings=settings,
        client=client,
        objects=RemoteObjects(client),
        projects=RestProjectStore(index),
        pipelines=RestPipelineStore(index),
        runs=RestRunStore(index),
        artifacts=RestArtifactCatalog(index),
        tracking=RestTrackingStore(index),
        models=RestModelRegistryStore(index),
        deployments=RestDeploymentStore(index),
    )
