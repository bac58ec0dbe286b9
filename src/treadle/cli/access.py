"""`treadle users`, `treadle tokens`, `treadle projects`, `treadle members`: who may do
what. Against a server (TREADLE_URL) they go through its API as the token's user; on the
local home they act on the store directly, as its owner — the way to replace a lost admin
token."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from treadle.cli import common
from treadle.errors import InvalidInputError

users = typer.Typer(help="Users of a treadle server (admins).", no_args_is_help=True)
tokens = typer.Typer(help="API tokens: shown once, stored hashed.", no_args_is_help=True)
projects = typer.Typer(help="Projects.", no_args_is_help=True)
members = typer.Typer(help="Members of the current project and their roles.", no_args_is_help=True)


def _table(*columns: str) -> Any:
    from rich.table import Table

    return Table(*columns)


@users.command("list")
def list_users() -> None:
    """List users."""
    found = (
        common.client().list_users()
        if common.remote()
        else (common.local_store().auth.list_users())
    )
    table = _table("name", "admin", "disabled", "created")
    for u in found:
        table.add_row(
            u.name,
            "yes" if u.is_admin else "",
            "yes" if u.disabled else "",
            common.when(u.created_at),
        )
    common.console().print(table)


@users.command("create")
def create_user(
    name: Annotated[str, typer.Argument(help="The user's name.")],
    admin: Annotated[bool, typer.Option("--admin", help="A server admin.")] = False,
) -> None:
    """Create a user; give them a token with `treadle tokens create --user NAME`."""
    if common.remote():
        user = common.client().create_user(name, is_admin=admin)
    else:
        user = common.local_store().auth.create_user(name, is_admin=admin)
    common.console().print(f"user {user.name} created" + (" (admin)" if user.is_admin else ""))


@tokens.command("create")
def create_token(
    name: Annotated[str, typer.Option(help="What the token is for.")] = "cli",
    user: Annotated[
        str | None,
        typer.Option(help="Issue it for this user (admins; locally: any user of the home)."),
    ] = None,
    expires_days: Annotated[
        float | None, typer.Option(min=0.001, help="Expire after this many days.")
    ] = None,
) -> None:
    """Create a token and print it once; only its sha256 is kept."""
    if common.remote():
        client = common.client()
        issued = (
            client.issue_token(user, name, expires_in_days=expires_days)
            if user
            else client.create_token(name, expires_in_days=expires_days)
        )
        token_id, secret = issued.id, issued.token
    else:
        from treadle.server.auth import issue_token

        if user is None:
            raise InvalidInputError(
                "on a local home, say whose token it is", "e.g. treadle tokens create --user admin"
            )
        store = common.local_store()
        token_id, secret = issue_token(store, store.auth.get_user(user), name, expires_days)
        store.audit.record(
            None, store.settings.user, "issue-token", "user", user, {"token": token_id}
        )
    common.err_console().print(f"token {common.short(token_id)} (shown this once, keep it):")
    typer.echo(secret)


@tokens.command("list")
def list_tokens() -> None:
    """Your tokens on the server (never their secrets)."""
    common.require_remote("treadle tokens list")
    table = _table("id", "name", "prefix", "created", "expires", "revoked")
    for t in common.client().list_tokens():
        table.add_row(
            common.short(t.id),
            t.name,
            t.prefix,
            common.when(t.created_at),
            common.when(t.expires_at),
            common.when(t.revoked_at),
        )
    common.console().print(table)


@tokens.command("revoke")
def revoke_token(token_id: Annotated[str, typer.Argument(help="The token's id.")]) -> None:
    """Revoke one of your tokens on the server; it stops working at once."""
    common.require_remote("treadle tokens revoke")
    record = common.client().revoke_token(token_id)
    common.console().print(f"token {common.short(record.id)} revoked")


@projects.command("list")
def list_projects() -> None:
    """Projects you are a member of (all, for an admin or on the local home)."""
    found = (
        common.client().list_projects()
        if common.remote()
        else (common.local_store().projects.list_projects())
    )
    for p in found:
        typer.echo(p.name)


@projects.command("create")
def create_project(name: Annotated[str, typer.Argument(help="The project's name.")]) -> None:
    """Create a project (admins); you become its owner."""
    common.require_remote("treadle projects create")
    project = common.client().create_project(name)
    common.console().print(f"project {project.name} created")


@members.command("list")
def list_members() -> None:
    """Members of the current project (TREADLE_PROJECT) and their roles."""
    common.require_remote("treadle members list")
    table = _table("user", "role", "since")
    for m in common.client().list_members():
        table.add_row(m.user_name, m.role, common.when(m.created_at))
    common.console().print(table)


@members.command("set")
def set_member(
    user: Annotated[str, typer.Argument(help="The user.")],
    role: Annotated[str, typer.Argument(help="viewer, editor or owner.")],
) -> None:
    """Add a member to the current project or change their role (owners)."""
    common.require_remote("treadle members set")
    record = common.client().set_member(user, role)
    common.console().print(f"{record.user_name} is {record.role}")


@members.command("remove")
def remove_member(user: Annotated[str, typer.Argument(help="The user.")]) -> None:
    """Remove a member from the current project (owners)."""
    common.require_remote("treadle members remove")
    common.client().remove_member(user)
    common.console().print(f"{user} removed")
