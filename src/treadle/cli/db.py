"""`treadle db`: the metadata database's schema."""

from __future__ import annotations

import typer

from treadle.cli import common
from treadle.store import migrate
from treadle.store.db import connect, redact

app = typer.Typer(help="Manage the metadata database schema.", no_args_is_help=True)


@app.command()
def upgrade() -> None:
    """Apply pending migrations (stores also do this when they open)."""
    common.require_local("db upgrade")
    db = connect(common.settings().db_url)
    try:
        before = migrate.current_revision(db)
        after = migrate.upgrade(db)
    finally:
        db.close()
    if before == after:
        common.console().print(f"schema is current (revision {after})")
    else:
        common.console().print(f"schema upgraded: {before or 'empty'} → {after}")


@app.command()
def current() -> None:
    """Print the schema revision of the database and where it is."""
    common.require_local("db current")
    s = common.settings()
    db = connect(s.db_url)
    try:
        revision = migrate.current_revision(db)
    finally:
        db.close()
    common.console().print(
        f"{redact(s.db_url)}: revision {revision or '(empty)'} "
        f"(this treadle expects {migrate.HEAD_REVISION})"
    )
