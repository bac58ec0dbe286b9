"""Alembic environment: runs treadle's migrations against the connection it is handed."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from treadle.store.sql.tables import metadata

# Any fixed 64-bit number, the same in every treadle process: the key of the advisory lock
# that lets one process at a time migrate a PostgreSQL database.
MIGRATION_LOCK = 0x7472656164_6C65

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    if connection.dialect.name == "postgresql":
        # Two servers started together on an empty database would both create the tables
        # and one would fail. The second waits here until the first commits, then finds
        # the schema current and has nothing to do.
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    context.run_migrations()
