"""Shared fixtures: an isolated treadle home per test, and the store on each backend.

PostgreSQL tests use the server on 127.0.0.1:5432 (trust auth). Each test session
creates its own database and drops it at the end; where no server answers, those
tests are skipped with the reason shown.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from treadle.config import Settings, load_settings
from treadle.store import Store, open_store

RESOURCES = Path(__file__).parent / "resources"
PG_ADMIN_URL = os.environ.get(
    "TREADLE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh TREADLE_HOME, also exported to the environment for code that reads it."""
    path = tmp_path / "home"
    monkeypatch.setenv("TREADLE_HOME", str(path))
    for var in (
        "TREADLE_DB_URL",
        "TREADLE_ARTIFACT_URL",
        "TREADLE_PROJECT",
        "TREADLE_EXPERIMENT",
        "TREADLE_EXECUTOR",
    ):
        monkeypatch.delenv(var, raising=False)
    return path


@pytest.fixture
def settings(home: Path) -> Settings:
    return load_settings()


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    s = open_store(settings)
    yield s
    s.close()


def _pg_connect(url: str):  # type: ignore[no-untyped-def]
    import psycopg

    plain = url.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(plain, autocommit=True, connect_timeout=3)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL database of this test session's own, dropped at the end."""
    try:
        admin = _pg_connect(PG_ADMIN_URL)
    except Exception as exc:  # no server here: say so, do not fail
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}")
    name = f"treadle_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The store on each backend; every contract test runs once per backend."""
    home = tmp_path / "home"
    if request.param == "sqlite":
        settings = Settings(
            home=home,
            db_url=f"sqlite:///{home / 'treadle.db'}",
            artifact_url=str(home / "artifacts"),
        )
    else:
        base = request.getfixturevalue("pg_url")
        schema_db = _fresh_pg_database(base)
        request.addfinalizer(lambda: _drop_pg_database(base, schema_db))
        settings = Settings(home=home, db_url=schema_db, artifact_url=str(home / "artifacts"))
    s = open_store(settings)
    yield s
    s.close()


def _fresh_pg_database(session_url: str) -> str:
    """Each contract test gets an empty database so tests cannot see each other's rows."""
    name = f"treadle_t_{uuid.uuid4().hex[:12]}"
    admin = _pg_connect(PG_ADMIN_URL)
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        admin.close()
    return session_url.rsplit("/", 1)[0] + f"/{name}"


def _drop_pg_database(session_url: str, url: str) -> None:
    admin = _pg_connect(PG_ADMIN_URL)
    try:
        admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        admin.close()
