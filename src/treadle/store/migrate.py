"""Schema migrations: Alembic scripts under sql/migrations, applied when a store opens.

Opening a store asks the database for its `alembic_version` with one cheap query and
only imports Alembic (and SQLAlchemy) when the schema is missing or behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from treadle.errors import StoreUnavailableError
from treadle.store.db import Database, redact

HEAD_REVISION = "0008"
"""The newest migration; a test pins it to Alembic's own head."""

MIGRATIONS = Path(__file__).parent / "sql" / "migrations"


def current_revision(db: Database) -> str | None:
    """The schema revision stamped in the database, or None for an empty database."""
    try:
        with db.read() as conn:
            rows = conn.execute("SELECT version_num FROM alembic_version")
    except Exception:  # the table does not exist yet
        return None
    return str(rows[0]["version_num"]) if rows else None


def _alembic_config(connection: Any) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(db: Database, revision: str = "head") -> str:
    """Bring the schema to `revision` and return the revision now stamped."""
    import sqlalchemy
    from alembic import command

    engine = getattr(db, "engine", None)
    owned = engine is None
    if engine is None:
        engine = sqlalchemy.create_engine(db.url)
    try:
        with engine.begin() as connection:
            command.upgrade(_alembic_config(connection), revision)
    except Exception as exc:
        raise StoreUnavailableError(
            f"migrating the database {redact(db.url)} failed: {redact(str(exc))}"
        ) from exc
    finally:
        if owned:
            engine.dispose()
    return current_revision(db) or ""


def ensure_schema(db: Database) -> None:
    """Apply pending migrations, if any. Cheap when the schema is current."""
    if current_revision(db) != HEAD_REVISION:
        upgrade(db)


def script_head() -> str:
    """Alembic's own idea of the newest revision (for the test that pins HEAD_REVISION)."""
    from alembic.script import ScriptDirectory

    return str(ScriptDirectory(str(MIGRATIONS)).get_current_head())
