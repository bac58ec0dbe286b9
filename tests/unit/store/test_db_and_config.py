"""Opening the metadata database, and where settings come from."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from treadle.config import Settings, load_settings
from treadle.errors import ConfigError, StoreUnavailableError
from treadle.store import db as dbmod
from treadle.store.db import SqliteDatabase, connect

# -- connecting -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+psycopg://treadle:s3cr3t-pw@127.0.0.1:1/treadle",
            "postgresql+psycopg://treadle:***@127.0.0.1:1/treadle",
        ),
        (
            "postgresql+psycopg://treadle:s3cr3t%40pw%3A@127.0.0.1:1/treadle",
            "postgresql+psycopg://treadle:***@127.0.0.1:1/treadle",
        ),
        (
            "postgresql+psycopg://nobody@127.0.0.1:1/db",
            "postgresql+psycopg://nobody@127.0.0.1:1/db",
        ),
    ],
)
def test_unreachable_postgresql_fails_fast_without_the_password(url: str, shown: str) -> None:
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError) as caught:
        connect(url)
    elapsed = time.monotonic() - started

    assert elapsed < 5
    message = str(caught.value)
    assert shown in message
    assert "s3cr3t" not in message
    assert caught.value.http_status == 503
    assert "TREADLE_DB_URL" in caught.value.hint


def test_unreachable_postgresql_hides_a_password_given_as_a_query_parameter() -> None:
    with pytest.raises(StoreUnavailableError) as caught:
        connect("postgresql+psycopg://treadle@127.0.0.1:1/treadle?password=s3cr3t-pw")
    assert "127.0.0.1:1/treadle" in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///",
        "sqlite:",
        "sqlite:///:memory:",
        "sqlite://:memory:",
        "treadle.db",
        "/var/lib/treadle.db",
        "",
    ],
)
def test_bad_database_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        connect(url)


def test_sqlite_absolute_url_creates_the_file_and_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "treadle.db"
    db = connect(f"sqlite:///{path}")
    try:
        assert isinstance(db, SqliteDatabase)
        assert db.dialect == "sqlite"
        assert db.path == path
        assert path.is_file()
    finally:
        db.close()


def test_sqlite_in_a_folder_that_cannot_exist_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreUnavailableError, match="a-file"):
        connect(f"sqlite:///{blocker / 'treadle.db'}")


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    db = connect(f"sqlite:///{tmp_path / 'wal.db'}")
    try:
        with db.read() as conn:
            assert conn.execute("PRAGMA journal_mode")[0][0] == "wal"
            assert conn.execute("PRAGMA foreign_keys")[0][0] == 1
        other_thread: list[str] = []
        t = threading.Thread(
            target=lambda: other_thread.append(_journal_mode(db)), name="second-reader"
        )
        t.start()
        t.join()
        assert other_thread == ["wal"]
    finally:
        db.close()


def _journal_mode(db: dbmod.Database) -> str:
    with db.read() as conn:
        return str(conn.execute("PRAGMA journal_mode")[0][0])


def test_write_rolls_back_on_error(tmp_path: Path) -> None:
    db = connect(f"sqlite:///{tmp_path / 'rb.db'}")
    try:
        with db.write() as conn:
            conn.execute("CREATE TABLE t (v INTEGER)")
        with pytest.raises(RuntimeError), db.write() as conn:
            conn.execute("INSERT INTO t (v) VALUES (1)")
            raise RuntimeError("abort")
        with db.write() as conn:
            conn.executemany("INSERT INTO t (v) VALUES (:v)", [{"v": 2}, {"v": 3}])
        with db.read() as conn:
            assert [r["v"] for r in conn.execute("SELECT v FROM t ORDER BY v")] == [2, 3]
    finally:
        db.close()


@pytest.mark.slow
def test_two_threads_writing_at_once_both_succeed(tmp_path: Path) -> None:
    db = connect(f"sqlite:///{tmp_path / 'concurrent.db'}")
    with db.write() as conn:
        conn.execute("CREATE TABLE t (writer TEXT, n INTEGER, total INTEGER)")
    per_writer = 40
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            barrier.wait()
            for n in range(per_writer):
                with db.write() as conn:
                    # Read-modify-write inside one transaction: lost updates would show
                    # up as a wrong running total.
                    total = conn.execute("SELECT COUNT(*) AS c FROM t")[0]["c"]
                    time.sleep(0.001)
                    conn.execute(
                        "INSERT INTO t (writer, n, total) VALUES (:w, :n, :total)",
                        {"w": name, "n": n, "total": total + 1},
                    )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(name,)) for name in ("a", "b")]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == []
        with db.read() as conn:
            rows = conn.execute("SELECT writer, n, total FROM t ORDER BY total")
        assert [r["total"] for r in rows] == list(range(1, 2 * per_writer + 1))
        for name in ("a", "b"):
            assert sorted(r["n"] for r in rows if r["writer"] == name) == list(range(per_writer))
        assert len({r["writer"] for r in rows[: per_writer + 1]}) == 2, "writers never interleaved"
    finally:
        db.close()


def test_two_connections_to_one_file_share_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first, second = connect(url), connect(url)
    try:
        with first.write() as conn:
            conn.execute("CREATE TABLE t (v TEXT)")
            conn.execute("INSERT INTO t (v) VALUES ('from first')")
        with second.read() as conn:
            assert [r["v"] for r in conn.execute("SELECT v FROM t")] == ["from first"]
    finally:
        first.close()
        second.close()


@pytest.mark.postgres
def test_postgresql_connects_and_round_trips(pg_url: str) -> None:
    db = connect(pg_url)
    try:
        assert db.dialect == "postgresql"
        with db.write() as conn:
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS scratch (v INTEGER)")
            conn.execute("SELECT 1")
        with db.read() as conn:
            assert conn.execute("SELECT :x + 1 AS y", {"x": 41}) == [{"y": 42}]
    finally:
        db.close()


# -- settings ---------------------------------------------------------------------------


def test_defaults_come_from_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    s = load_settings({"TREADLE_HOME": str(home), "TREADLE_USER": "ci"})
    assert s == Settings(
        home=home,
        db_url=f"sqlite:///{home / 'treadle.db'}",
        artifact_url=str(home / "artifacts"),
        project="default",
        experiment="default",
        executor="local",
        user="ci",
    )


def test_environment_beats_config_file_beats_defaults(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(
        'db_url = "postgresql+psycopg://file@127.0.0.1/file"\n'
        'project = "from-file"\n'
        'experiment = "from-file"\n'
    )
    env = {
        "TREADLE_HOME": str(home),
        "TREADLE_PROJECT": "from-env",
        "TREADLE_USER": "ci",
    }
    s = load_settings(env)

    assert s.project == "from-env"
    assert s.experiment == "from-file"
    assert s.db_url == "postgresql+psycopg://file@127.0.0.1/file"
    assert s.artifact_url == str(home / "artifacts")
    assert s.executor == "local"


def test_every_key_can_come_from_the_file_or_the_environment(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    keys = ("db_url", "artifact_url", "project", "experiment", "executor", "user")
    (home / "config.toml").write_text("".join(f'{k} = "file-{k}"\n' for k in keys))

    from_file = load_settings({"TREADLE_HOME": str(home)})
    from_env = load_settings(
        {"TREADLE_HOME": str(home), **{f"TREADLE_{k.upper()}": f"env-{k}" for k in keys}}
    )

    for key in keys:
        assert getattr(from_file, key) == f"file-{key}"
        assert getattr(from_env, key) == f"env-{key}"


@pytest.mark.sqlite_only("the default database is the SQLite file in the home")
def test_home_is_read_from_the_process_environment(home: Path, settings: Settings) -> None:
    assert settings.home == home
    assert load_settings().db_url == f"sqlite:///{home / 'treadle.db'}"


def test_unknown_config_keys_are_config_errors(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text('project = "p"\ndb_uri = "typo"\n')
    with pytest.raises(ConfigError, match="db_uri") as caught:
        load_settings({"TREADLE_HOME": str(home)})
    assert "db_url" in caught.value.hint


def test_malformed_config_file_is_a_config_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text("project = \n")
    with pytest.raises(ConfigError, match=r"config\.toml"):
        load_settings({"TREADLE_HOME": str(home)})


def test_settings_replace_returns_a_copy(tmp_path: Path) -> None:
    s = load_settings({"TREADLE_HOME": str(tmp_path), "TREADLE_USER": "u"})
    t = s.replace(project="other")
    assert (s.project, t.project) == ("default", "other")
    assert t.home == s.home
