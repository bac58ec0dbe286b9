"""`treadle deployments`: managed deployments, their revisions and traffic."""

from __future__ import annotations

from typing import Annotated

import typer

from treadle.cli import common
from treadle.cli.actions import actions
from treadle.cli.serve import parse_percent, serve_deployment
from treadle.errors import InvalidInputError

app = typer.Typer(help="Managed deployments: revisions, traffic, rollback.", no_args_is_help=True)
app.command("serve")(serve_deployment)


def _targets(targets: list[dict[str, object]]) -> str:
    return ", ".join(
        f"v{t['version']} {t['role']}"
        + (f" {float(str(t['weight'])) * 100:g}%" if t["role"] == "canary" else "")
        for t in targets
    )


@app.command("list")
def list_deployments() -> None:
    """List deployments with what they serve now."""
    from rich.table import Table

    store, project = common.store(), common.project_id()
    table = Table("name", "follows", "policy", "revision", "serving", "pinned")
    found = store.deployments.list_deployments(project)
    for d in found:
        rev = store.deployments.current_revision(d.id)
        table.add_row(
            d.name,
            f"{d.spec['model']}@{d.spec['primary']}",
            d.spec["policy"],
            str(rev.number) if rev else "-",
            _targets(rev.targets) if rev else "-",
            "yes" if d.spec.get("pinned") else "no",
        )
    common.console().print(table if found else "no deployments: create one with `treadle deploy`")


@app.command()
def show(name: Annotated[str, typer.Argument(help="Deployment name.")]) -> None:
    """Show a deployment's spec and its revision history."""
    from rich.table import Table

    store, project = common.store(), common.project_id()
    d = store.deployments.get_deployment(project, name)
    spec = d.spec
    console = common.console()
    console.print(
        f"[bold]{d.name}[/]  follows {spec['model']}@{spec['primary']}, "
        f"policy {spec['policy']}"
        + (f" with {spec['candidate']}" if spec.get("candidate") else "")
        + ("  [yellow]pinned by a rollback[/]" if spec.get("pinned") else "")
    )
    table = Table("revision", "serving", "why", "when", "by")
    for r in store.deployments.list_revisions(d.id):
        table.add_row(
            str(r.number), _targets(r.targets), r.reason, common.when(r.created_at), r.created_by
        )
    console.print(table)


@app.command()
def rollback(name: Annotated[str, typer.Argument(help="Deployment name.")]) -> None:
    """Go back to the previous revision's versions and stay there (pinned) until
    `treadle deployments follow NAME` or a new `treadle deploy`."""
    revision = actions().rollback(name)
    common.console().print(f"{name}: revision {revision.number} — {revision.reason}")


@app.command()
def follow(name: Annotated[str, typer.Argument(help="Deployment name.")]) -> None:
    """Follow the aliases again after a rollback."""
    revision = actions().follow(name)
    common.console().print(f"{name}: revision {revision.number} — {revision.reason}")


def _set_policy(name: str, policy: str, candidate: str | None, weight: float = 0.1) -> None:
    if policy != "single" and not candidate:
        raise InvalidInputError(f"{policy} needs --candidate")
    revision = actions().set_traffic(name, policy, candidate, weight)
    common.console().print(f"{name}: revision {revision.number} — {revision.reason}")


@app.command()
def canary(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    percent: Annotated[str, typer.Option(help="Share of requests for the candidate.")] = "10%",
    candidate: Annotated[str, typer.Option(help="Alias or version.")] = "challenger",
) -> None:
    """Send a share of the requests to a candidate version."""
    _set_policy(name, "canary", candidate, parse_percent(percent, "--percent"))


@app.command()
def shadow(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    candidate: Annotated[str, typer.Option(help="Alias or version.")] = "challenger",
) -> None:
    """Mirror every request to a candidate; only the primary answers."""
    _set_policy(name, "shadow", candidate)


@app.command()
def single(name: Annotated[str, typer.Argument(help="Deployment name.")]) -> None:
    """Serve the primary alone again."""
    _set_policy(name, "single", None)
