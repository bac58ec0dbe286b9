"""Metadata and artifact storage.

`open_store(settings)` gives a `Store`: the metadata database (runs, steps, artifacts,
lineage, params, metrics, registered models, deployments) and the content-addressed
object store, migrated and ready.
"""

from __future__ import annotations

import dataclasses
import threading

from treadle.config import Settings
from treadle.store.artifacts import ArtifactStore
from treadle.store.db import Database, connect
from treadle.store.migrate import ensure_schema
from treadle.store.protocols import (
    ArtifactCatalog,
    DeploymentStore,
    ModelRegistryStore,
    PipelineStore,
    ProjectStore,
    RunStore,
    TrackingStore,
)
from treadle.store.sql.artifacts import SqlArtifactCatalog
from treadle.store.sql.auth import SqlAuditStore, SqlAuthStore
from treadle.store.sql.automation import SqlAutomationStore
from treadle.store.sql.deployments import SqlDeploymentStore
from treadle.store.sql.monitoring import SqlMonitoringStore
from treadle.store.sql.pipelines import SqlPipelineStore
from treadle.store.sql.policies import SqlPolicyStore
from treadle.store.sql.projects import SqlProjectStore
from treadle.store.sql.registry import SqlModelRegistryStore
from treadle.store.sql.runs import SqlRunStore
from treadle.store.sql.tracking import SqlTrackingStore


@dataclasses.dataclass
class Store:
    """Everything treadle records, reached through one small interface per noun group."""

    settings: Settings
    db: Database
    objects: ArtifactStore
    projects: ProjectStore
    pipelines: PipelineStore
    runs: RunStore
    artifacts: ArtifactCatalog
    tracking: TrackingStore
    models: ModelRegistryStore
    deployments: DeploymentStore
    auth: SqlAuthStore
    audit: SqlAuditStore
    automation: SqlAutomationStore
    monitoring: SqlMonitoringStore
    policies: SqlPolicyStore

    def close(self) -> None:
        self.db.close()


def open_store(settings: Settings, *, migrate: bool = True) -> Store:
    """Open (and, unless `migrate=False`, migrate) the store that `settings` name."""
    db = connect(settings.db_url)
    if migrate:
        ensure_schema(db)
    return Store(
        settings=settings,
        db=db,
        objects=ArtifactStore(settings.artifact_url),
        projects=SqlProjectStore(db),
        pipelines=SqlPipelineStore(db),
        runs=SqlRunStore(db),
        artifacts=SqlArtifactCatalog(db),
        tracking=SqlTrackingStore(db),
        models=SqlModelRegistryStore(db),
        deployments=SqlDeploymentStore(db),
        auth=SqlAuthStore(db),
        audit=SqlAuditStore(db),
        automation=SqlAutomationStore(db),
        monitoring=SqlMonitoringStore(db),
        policies=SqlPolicyStore(db),
    )


_shared: dict[tuple[str, str], Store] = {}
_shared_lock = threading.Lock()


def shared_store(settings: Settings) -> Store:
    """One open store per (database, artifact URL) in this process, for workers."""
    key = (settings.db_url, settings.artifact_url)
    with _shared_lock:
        store = _shared.get(key)
        if store is None:
            store = _shared[key] = open_store(settings)
        return store


__all__ = ["ArtifactStore", "Store", "open_store", "shared_store"]
