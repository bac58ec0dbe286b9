"""The migration scripts and the declared schema agree, on both backends."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from treadle.config import Settings
from treadle.errors import StoreUnavailableError
from treadle.store import open_store
from treadle.store.db import connect
from treadle.store.migrate import (
    HEAD_REVISION,
    current_revision,
    ensure_schema,
    script_head,
    upgrade,
)
from treadle.store.records import RunRecord, new_id
from treadle.store.sql.projects import SqlProjectStore
from treadle.store.sql.tables import metadata
from treadle.types import RunState

PG_ADMIN_URL = os.environ.get(
    "TREADLE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def schema_diff(url: str) -> list[Any]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def table_columns(url: str) -> dict[str, set[str]]:
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        return {
            t: {c["name"] for c in inspector.get_columns(t)} for t in inspector.get_table_names()
        }
    finally:
        engine.dispose()


def expected_columns() -> dict[str, set[str]]:
    declared = {t.name: {c.name for c in t.columns} for t in metadata.sorted_tables}
    return {**declared, "alembic_version": {"version_num"}}


def test_head_revision_is_alembics_head() -> None:
    assert script_head() == HEAD_REVISION


def test_fresh_sqlite_database_matches_the_declared_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    db = connect(url)
    try:
        assert current_revision(db) is None
        ensure_schema(db)
        assert current_revision(db) == HEAD_REVISION
    finally:
        db.close()

    assert table_columns(url) == expected_columns()
    assert schema_diff(url) == []


def test_ensure_schema_twice_is_harmless(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'twice.db'}"
    db = connect(url)
    try:
        ensure_schema(db)
        with db.write() as conn:
            conn.execute(
                "INSERT INTO projects (id, name, created_at, created_by) "
                "VALUES ('0123456789abcdef0123456789abcdef', 'kept', 1.0, 'u')"
            )
        ensure_schema(db)
        with db.read() as conn:
            assert [r["name"] for r in conn.execute("SELECT name FROM projects")] == ["kept"]
        assert current_revision(db) == HEAD_REVISION
    finally:
        db.close()


def test_sqlite_schema_drift_is_detected(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'drift.db'}"
    db = connect(url)
    try:
        ensure_schema(db)
        with db.write() as conn:
            conn.execute("ALTER TABLE runs ADD COLUMN stray TEXT")
    finally:
        db.close()
    diff = schema_diff(url)
    assert [(d[0], d[2], d[3].name) for d in diff] == [("remove_column", "runs", "stray")]


def _database_at_0001_with_a_run(url: str) -> RunRecord:
    """A database as treadle 0001 left it: schema at revision 0001 and one run recorded."""
    db = connect(url)
    try:
        assert upgrade(db, "0001") == "0001"
        project = SqlProjectStore(db).ensure_project("old", "alice")
        experiment = SqlProjectStore(db).ensure_experiment(project.id, "default", "alice")
        run = RunRecord(
            id=new_id(),
            project_id=project.id,
            experiment_id=experiment.id,
            pipeline_version_id=None,
            name="before-the-registry",
            state=RunState.SUCCEEDED,
            created_by="alice",
            executor="local",
            attempt=1,
            created_at=1_700_000_000.5,
            started_at=1_700_000_001.0,
            ended_at=1_700_000_002.0,
        )
        # written as that version wrote it: only the columns the 0001 schema has
        with db.write() as conn:
            conn.execute(
                "INSERT INTO runs (id, project_id, experiment_id, pipeline_version_id, name, "
                "state, created_by, executor, attempt, created_at, started_at, ended_at, error) "
                "VALUES (:id, :project_id, :experiment_id, NULL, :name, :state, :created_by, "
                ":executor, :attempt, :created_at, :started_at, :ended_at, NULL)",
                {
                    "id": run.id,
                    "project_id": run.project_id,
                    "experiment_id": run.experiment_id,
                    "name": run.name,
                    "state": run.state.value,
                    "created_by": run.created_by,
                    "executor": run.executor,
                    "attempt": run.attempt,
                    "created_at": run.created_at,
                    "started_at": run.started_at,
                    "ended_at": run.ended_at,
                },
            )
        assert "registered_models" not in table_columns(url)
    finally:
        db.close()
    return run


def _check_open_store_upgrades_from_0001(url: str, home: Path) -> None:
    run = _database_at_0001_with_a_run(url)

    store = open_store(Settings(home=home, db_url=url, artifact_url=str(home / "artifacts")))
    try:
        assert current_revision(store.db) == HEAD_REVISION
        assert store.runs.get_run(run.id) == run
        model = store.models.ensure_model(run.project_id, "iris", "alice")
        version = store.models.add_version(
            model.id,
            flavor="sklearn",
            manifest_sha="ab" * 32,
            signature={},
            metrics={},
            run_id=run.id,
            step_run_id=None,
            trusted=True,
            user="alice",
        )
        assert store.models.get_version(model.id, 1) == version
    finally:
        store.close()

    assert table_columns(url) == expected_columns()
    assert schema_diff(url) == []


def test_sqlite_database_at_0001_upgrades_when_opened_and_keeps_its_runs(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    _check_open_store_upgrades_from_0001(f"sqlite:///{home / 'treadle.db'}", home)


_OPEN_EXISTING = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from treadle.config import Settings
    from treadle.store import open_store

    home = Path(sys.argv[1])
    store = open_store(
        Settings(home=home, db_url=f"sqlite:///{home / 'treadle.db'}",
                 artifact_url=str(home / "artifacts"))
    )
    project = store.projects.ensure_project("p", "u")
    store.close()
    print(project.name, "alembic" in sys.modules, "sqlalchemy" in sys.modules)
    """
)


@pytest.mark.slow
def test_opening_a_current_store_does_not_import_alembic(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = Settings(
        home=home, db_url=f"sqlite:///{home / 'treadle.db'}", artifact_url=str(home / "artifacts")
    )
    open_store(settings).close()

    out = subprocess.run(
        [sys.executable, "-c", _OPEN_EXISTING, str(home)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.split() == ["p", "False", "False"]


@pytest.mark.slow
def test_opening_an_empty_store_does_migrate_it(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _OPEN_EXISTING, str(tmp_path / "new-home")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.split() == ["p", "True", "True"]


def _plain_connect(url: str) -> Any:
    import psycopg

    return psycopg.connect(
        url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True, connect_timeout=3
    )


def _admin() -> Any:
    return _plain_connect(PG_ADMIN_URL)


@pytest.fixture
def pg_database(pg_url: str) -> Iterator[str]:
    """An empty database of this test's own, next to the session's."""
    name = f"treadle_mig_{uuid.uuid4().hex[:12]}"
    admin = _admin()
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
        yield pg_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.mark.postgres
def test_fresh_postgresql_database_matches_the_declared_schema(pg_database: str) -> None:
    db = connect(pg_database)
    try:
        assert current_revision(db) is None
        ensure_schema(db)
        assert current_revision(db) == HEAD_REVISION
        ensure_schema(db)
    finally:
        db.close()

    assert table_columns(pg_database) == expected_columns()
    assert schema_diff(pg_database) == []


@pytest.mark.postgres
def test_failed_migration_does_not_show_the_password(pg_database: str) -> None:
    with _plain_connect(pg_database) as conn:
        # A table in the way makes the first migration fail.
        conn.execute("CREATE TABLE projects (id TEXT)")
    # The test server trusts local connections, so any password is accepted.
    with_password = (
        sa.engine.make_url(pg_database)
        .set(username="postgres", password="s3cr3t-pw")
        .render_as_string(hide_password=False)
    )
    assert with_password != pg_database
    db = connect(with_password)
    try:
        with pytest.raises(StoreUnavailableError, match="migrating") as caught:
            ensure_schema(db)
    finally:
        db.close()
    assert "postgres:***@" in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


@pytest.mark.postgres
def test_postgresql_database_at_0001_upgrades_when_opened_and_keeps_its_runs(
    pg_database: str, tmp_path: Path
) -> None:
    _check_open_store_upgrades_from_0001(pg_database, tmp_path / "home")
