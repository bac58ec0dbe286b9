"""`ArtifactCatalog.has_object`, on SQLite and PostgreSQL: the server lets a project
read an object by its sha256 only if something of that project refers to it, because
objects are shared by content across projects."""

from __future__ import annotations

import hashlib

from treadle.store import Store
from treadle.store.records import ArtifactRecord, RunRecord, StepRunRecord, new_id
from treadle.types import RunState, StepState

T0 = 1_700_000_000.0


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _run(store: Store, project_id: str) -> RunRecord:
    experiment = store.projects.ensure_experiment(project_id, "default", "alice")
    run = RunRecord(
        new_id(), project_id, experiment.id, None, "r", RunState.RUNNING, "alice", "local", 1, T0
    )
    store.runs.create_run(run)
    return run


def test_an_object_is_the_projects_through_an_artifact_a_manifest_or_a_log(
    any_store: Store,
) -> None:
    store = any_store
    mine = store.projects.ensure_project("mine", "alice").id
    other = store.projects.ensure_project("other", "alice").id
    artifact_sha, manifest_sha, log_sha, stranger = (
        _sha(x) for x in ("artifact", "manifest", "log", "stranger")
    )
    for sha in (artifact_sha, manifest_sha, log_sha, stranger):
        assert not store.artifacts.has_object(mine, sha)

    run = _run(store, mine)
    store.artifacts.add_artifact(
        ArtifactRecord(
            new_id(),
            mine,
            "data",
            "dataset",
            "json",
            "dict",
            artifact_sha,
            f"treadle-object:sha256:{artifact_sha}",
            8,
            T0,
            run.id,
        )
    )
    model = store.models.ensure_model(mine, "m", "alice")
    store.models.add_version(
        model.id,
        flavor="python",
        manifest_sha=manifest_sha,
        signature={},
        metrics={},
        run_id=None,
        step_run_id=None,
        trusted=False,
        user="alice",
    )
    step = StepRunRecord(new_id(), run.id, mine, "load", "load", 1, StepState.RUNNING, T0)
    store.runs.start_step(step)
    store.runs.finish_step(
        step.id, StepState.SUCCEEDED, at=T0 + 1, log_uri=f"treadle-object:sha256:{log_sha}"
    )

    for sha in (artifact_sha, manifest_sha, log_sha):
        assert store.artifacts.has_object(mine, sha)
        assert not store.artifacts.has_object(other, sha)
    assert not store.artifacts.has_object(mine, stranger)
