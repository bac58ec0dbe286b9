"""`treadle artifacts`: what runs produced."""

from __future__ import annotations

from typing import Annotated

import typer

from treadle.cli import common

app = typer.Typer(help="List the artifacts of runs.", no_args_is_help=True)


@app.command("list")
def list_artifacts(
    run_id: Annotated[str, typer.Argument(help="Run id or a unique prefix.")],
    kind: Annotated[
        str | None,
        typer.Option(help="Only this kind: dataset, model, metrics, report, file, value."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the short ids.")] = False,
) -> None:
    """List the artifacts a run's steps produced (or reused from the cache)."""
    from rich.table import Table

    store = common.store()
    run = store.runs.get_run(run_id, common.project_id())
    rows = [
        (step_run, name, art)
        for step_run, name, art in store.artifacts.run_artifacts(run.id)
        if kind is None or art.kind == kind
    ]
    if quiet:
        for _, _, art in rows:
            typer.echo(common.short(art.id))
        return
    table = Table("id", "step", "output", "kind", "format", "size", "sha256")
    for step_run, name, art in rows:
        table.add_row(
            common.short(art.id),
            step_run.node,
            name,
            art.kind,
            art.materializer,
            f"{art.size:,}",
            art.sha256[:12],
        )
    common.console().print(table if rows else "no artifacts")
