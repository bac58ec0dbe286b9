"""`treadle experiments`: the sets of comparable runs."""

from __future__ import annotations

import typer

from treadle.cli import common

app = typer.Typer(help="List experiments.", no_args_is_help=True)


@app.command("list")
def list_experiments() -> None:
    """List the project's experiments with their run counts."""
    from rich.table import Table

    summaries = common.store().projects.list_experiments(common.project_id())
    table = Table("name", "runs", "last run", "created by")
    for s in summaries:
        table.add_row(
            s.experiment.name, str(s.run_count), common.when(s.last_run_at), s.experiment.created_by
        )
    common.console().print(
        table if summaries else "no experiments yet: `treadle run FILE -e NAME` makes one"
    )
