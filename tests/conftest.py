"""Shared fixtures: an isolated treadle home per test, and the store on each backend.

PostgreSQL tests use the server on 127.0.0.1:5432 (trust auth). Each test session
creates its own databases and drops them at the end; where no server answers, those
tests are skipped with the reason shown.

Two ways to run on PostgreSQL:

- `TREADLE_DB_URL=postgresql+psycopg://HOST:PORT/DB pytest` runs the whole suite there:
  every home a test makes (the `home` fixture, and homes made with `make_home`) names a
  fresh database of its own on that server in its `config.toml`, so the test's store and
  every `treadle` process started on that home use it. The variable itself is taken out
  of the environment, so nothing falls back to one database shared by every test.
- Modules marked `every_backend` run each test that uses a home twice, on SQLite and on
  PostgreSQL, in the default run too.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from treadle.config import Settings, load_settings
from treadle.store import Store, open_store
from treadle.store.db import connect
from treadle.store.migrate import ensure_schema

RESOURCES = Path(__file__).parent / "resources"

# The suite's own name for the session's database URL: TREADLE_DB_URL is moved here when
# the run starts (before xdist starts its workers, which inherit it), so no code under
# test and no child process reads the one shared database by accident.
_SESSION_VAR = "TREADLE_TEST_SESSION_DB_URL"
os.environ.setdefault(_SESSION_VAR, os.environ.pop("TREADLE_DB_URL", ""))
SESSION_DB_URL = os.environ[_SESSION_VAR]
ON_POSTGRES = SESSION_DB_URL.startswith("postgresql")
"""True when the whole run is on PostgreSQL (TREADLE_DB_URL named a postgresql URL)."""
PG_ADMIN_URL = os.environ.get("TREADLE_TEST_PG_URL") or (
    SESSION_DB_URL if ON_POSTGRES else "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BACKENDS = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "every_backend: tests of this module that use a home run on SQLite and on PostgreSQL",
    )
    config.addinivalue_line(
        "markers",
        "sqlite_only(reason): checks something only SQLite has; skipped when the whole run "
        "is on PostgreSQL",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not ON_POSTGRES:
        return
    for item in items:
        marker = item.get_closest_marker("sqlite_only")
        if marker is not None:
            reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
            item.add_marker(pytest.mark.skip(reason=f"SQLite only: {reason}"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
        "every_backend"
    ):
        # module scope: a module's shared server or home is made once per backend
        metafunc.parametrize(
            "backend",
            [
                pytest.param("sqlite", id="sqlite"),
                pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
            ],
            indirect=True,
            scope="module",
        )


# -- PostgreSQL databases -----------------------------------------------------------------


def _pg_connect(url: str) -> Any:
    import psycopg

    plain = url.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(plain, autocommit=True, connect_timeout=3)


def _database_url(name: str) -> str:
    base, _, rest = PG_ADMIN_URL.rpartition("/")
    query = rest.partition("?")[2]
    return f"{base}/{name}" + (f"?{query}" if query else "")


class PgDatabases:
    """Creates databases on the test server and drops every one it made."""

    def __init__(self) -> None:
        self._admin = _pg_connect(PG_ADMIN_URL)
        self._lock = threading.Lock()
        self._made: list[str] = []
        self._template: str | None = None

    def _execute(self, sql: str) -> None:
        with self._lock:
            self._admin.execute(sql)

    def empty(self, prefix: str = "treadle_t") -> str:
        """The URL of a new, empty database (no schema yet)."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self._execute(f'CREATE DATABASE "{name}"')
        self._made.append(name)
        return _database_url(name)

    def migrated(self, prefix: str = "treadle_t") -> str:
        """The URL of a new database with the current schema, copied from a template that is
        migrated once per session (a copy takes milliseconds, a migration half a second)."""
        if self._template is None:
            url = self.empty("treadle_template")
            db = connect(url)
            try:
                ensure_schema(db)
            finally:
                db.close()
            self._template = url.rpartition("/")[2].partition("?")[0]
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"')
        self._made.append(name)
        return _database_url(name)

    def drop(self, url: str) -> None:
        name = url.rpartition("/")[2].partition("?")[0]
        self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self._made:
            self._made.remove(name)

    def close(self) -> None:
        for name in reversed(self._made):
            self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._made.clear()
        self._admin.close()


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[PgDatabases]:
    try:
        databases = PgDatabases()
    except Exception as exc:  # no server here: say so, do not fail
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}")
    try:
        yield databases
    finally:
        databases.close()


@pytest.fixture(scope="session")
def pg_url(pg_databases: PgDatabases) -> str:
    """An empty PostgreSQL database of this test session's own, dropped at the end."""
    return pg_databases.empty("treadle_test")


# -- homes --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backend(request: pytest.FixtureRequest) -> str:
    """The metadata backend of the homes a test makes: the run's, or each in turn under
    `every_backend`."""
    return str(getattr(request, "param", "postgresql" if ON_POSTGRES else "sqlite"))


def _name_database(path: Path, url: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.toml").write_text(f'db_url = "{url}"\n')


@pytest.fixture(scope="session")
def make_home(request: pytest.FixtureRequest) -> Callable[..., Path]:
    """`make_home(path, backend=None)` makes `path` a treadle home on `backend` (default:
    the run's) and returns it. On PostgreSQL the home's `config.toml` names a fresh
    database of its own, dropped at the end of the session; the CLI and `treadle up`
    started on that home use it."""

    def make(path: Path, backend: str | None = None) -> Path:
        if (backend or ("postgresql" if ON_POSTGRES else "sqlite")) == "postgresql":
            databases: PgDatabases = request.getfixturevalue("pg_databases")
            _name_database(path, databases.migrated("treadle_home"))
        return path

    return make


@pytest.fixture
def home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str, request: pytest.FixtureRequest
) -> Path:
    """A fresh TREADLE_HOME, also exported to the environment for code that reads it. On
    PostgreSQL its `config.toml` names a database of this test's own."""
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
    if backend == "postgresql":
        databases: PgDatabases = request.getfixturevalue("pg_databases")
        url = databases.migrated("treadle_home")
        request.addfinalizer(lambda: databases.drop(url))
        _name_database(path, url)
    return path


@pytest.fixture
def settings(home: Path) -> Settings:
    return load_settings()


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    s = open_store(settings)
    yield s
    s.close()


@pytest.fixture(params=BACKENDS)
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The store on each backend; every contract test runs once per backend, each on an
    empty database so tests cannot see each other's rows."""
    home = tmp_path / "home"
    if request.param == "sqlite":
        db_url = f"sqlite:///{home / 'treadle.db'}"
    else:
        databases: PgDatabases = request.getfixturevalue("pg_databases")
        db_url = databases.migrated()
        request.addfinalizer(lambda: databases.drop(db_url))
    s = open_store(Settings(home=home, db_url=db_url, artifact_url=str(home / "artifacts")))
    yield s
    s.close()
