"""A thin door to the metadata database: one SQL text, two drivers.

Every query treadle runs is portable SQL with `:name` parameters. On SQLite (the
embedded default) it goes straight to the standard library's `sqlite3`; on any other
URL it goes through a SQLAlchemy engine, imported only then. SQLAlchemy's import alone
costs about 0.2 s on the reference machine, more than half of the budget for a whole
fresh-process pipeline run, so the default path must not pay it.

SQLite runs in WAL mode with a busy timeout, one connection per thread, and write
transactions start with BEGIN IMMEDIATE so two writers queue instead of deadlocking.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from treadle.errors import ConfigError, InvalidInputError, StoreUnavailableError

Row = Mapping[str, Any]
Params = Mapping[str, Any]


class Connection(Protocol):
    def execute(self, sql: str, params: Params | None = None) -> list[Row]: ...
    def executemany(self, sql: str, rows: Sequence[Params]) -> None: ...


class Database(Protocol):
    url: str
    dialect: str

    def read(self) -> Any:
        """Context manager yielding a Connection for reads."""

    def write(self) -> Any:
        """Context manager yielding a Connection inside one committed transaction."""

    def close(self) -> None: ...


class _SqliteConnection:
    __slots__ = ("_raw",)

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def execute(self, sql: str, params: Params | None = None) -> list[Row]:
        try:
            rows: list[Row] = self._raw.execute(sql, params or {}).fetchall()
        except OverflowError as exc:
            raise _unstorable(exc) from None
        return rows

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        try:
            self._raw.executemany(sql, rows)
        except OverflowError as exc:
            raise _unstorable(exc) from None


class SqliteDatabase:
    dialect = "sqlite"

    def __init__(self, url: str, path: Path, busy_timeout_s: float = 30.0) -> None:
        self.url = url
        self.path = path
        self._timeout = busy_timeout_s
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self._writer = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._raw()
            conn.execute("PRAGMA journal_mode=WAL")
        except Exception as exc:  # sqlite3.Error or OSError
            raise StoreUnavailableError(f"cannot open SQLite database {path}: {exc}") from exc

    def _raw(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            import sqlite3

            conn = sqlite3.connect(
                self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        yield _SqliteConnection(self._raw())

    @contextmanager
    def write(self) -> Iterator[Connection]:
        raw = self._raw()
        # Threads of one process queue here, in turn, rather than in SQLite's busy
        # handler, which sleeps and retries and lets a waiting writer starve for seconds.
        with self._writer:
            raw.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteConnection(raw)
            except BaseException:
                raw.execute("ROLLBACK")
                raise
            raw.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()


class _SqlAlchemyConnection:
    __slots__ = ("_conn", "_data_error", "_text")

    def __init__(self, conn: Any, text: Any, data_error: type[Exception]) -> None:
        self._conn = conn
        self._text = text
        self._data_error = data_error

    def execute(self, sql: str, params: Params | None = None) -> list[Row]:
        try:
            result = self._conn.execute(self._text(sql), dict(params or {}))
        except self._data_error as exc:
            raise _unstorable(exc) from None
        if not result.returns_rows:
            return []
        return list(result.mappings().all())

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        if rows:
            try:
                self._conn.execute(self._text(sql), [dict(r) for r in rows])
            except self._data_error as exc:
                raise _unstorable(exc) from None


def _unstorable(exc: BaseException) -> InvalidInputError:
    """A value the database cannot hold (a NUL character, a number past 64 bits) is the
    caller's mistake, not the store's."""
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return InvalidInputError(
        f"a value cannot be stored: {first}",
        "remove NUL characters and keep whole numbers within 64 bits",
    )


class SqlAlchemyDatabase:
    """Any database SQLAlchemy speaks to; PostgreSQL is the one treadle tests."""

    def __init__(self, url: str) -> None:
        import sqlalchemy

        self.url = url
        self._text = sqlalchemy.text
        self._data_error = sqlalchemy.exc.DataError
        try:
            self.engine = sqlalchemy.create_engine(url, pool_pre_ping=True, future=True)
            self.dialect = self.engine.dialect.name
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except Exception as exc:
            raise StoreUnavailableError(
                f"cannot reach database {redact(url)}: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}"
            ) from exc

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield _SqlAlchemyConnection(conn, self._text, self._data_error)
            conn.rollback()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield _SqlAlchemyConnection(conn, self._text, self._data_error)

    def close(self) -> None:
        self.engine.dispose()


def redact(url: str) -> str:
    """Hide passwords in a URL (`user:pw@` and `?password=`) before it reaches a message."""
    url = re.sub(r"([?&]password=)[^&]*", r"\1***", url, flags=re.IGNORECASE)
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        if ":" in creds:
            creds = creds.split(":", 1)[0] + ":***"
        return f"{scheme}://{creds}@{host}"
    return url


def connect(url: str) -> Database:
    """Open the database at `url` (sqlite:///path, postgresql+psycopg://...)."""
    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite:").lstrip("/")
        if url.startswith("sqlite:////") or url.startswith("sqlite:///"):
            path = url[len("sqlite:///") :]
        if not path or path == ":memory:":
            raise ConfigError(
                f"unsupported SQLite URL {url!r}",
                "give a file path, e.g. sqlite:////home/me/.treadle/treadle.db",
            )
        return SqliteDatabase(url, Path(path))
    if "://" not in url:
        raise ConfigError(
            f"TREADLE_DB_URL {url!r} is not a database URL",
            "use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB",
        )
    return SqlAlchemyDatabase(url)
