"""Alembic environment: runs treadle's migrations against the connection it is handed."""

from __future__ import annotations

from alembic import context

from treadle.store.sql.tables import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
