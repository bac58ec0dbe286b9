"""The `treadle` command."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape

from treadle.cli import (
    access,
    artifacts,
    automation,
    common,
    db,
    deployments,
    experiments,
    kfp,
    models,
    monitoring,
    pipeline,
    runs,
)
from treadle.cli.common import err_console
from treadle.cli.compile import compile_command
from treadle.cli.demo import demo
from treadle.cli.init import init
from treadle.cli.lineage import lineage
from treadle.cli.run import run
from treadle.cli.serve import deploy, serve
from treadle.cli.up import up
from treadle.errors import TreadleError

app = typer.Typer(
    name="treadle",
    help="Pipelines that run locally, cached, resumable and tracked; a model registry; "
    "model servers.\n\n"
    "Settings come from TREADLE_HOME (default ~/.treadle), TREADLE_DB_URL and "
    "TREADLE_ARTIFACT_URL. With TREADLE_URL (or --url) and TREADLE_TOKEN set, the commands "
    "that read runs, artifacts, models and deployments, and those that move aliases and "
    "traffic, work against that treadle server instead. Add --debug to any command for a "
    "full traceback.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            metavar="URL",
            help="Work against the treadle server at URL (as TREADLE_TOKEN's user) instead "
            "of the local home; overrides TREADLE_URL.",
        ),
    ] = None,
) -> None:
    if url:
        common.use_url(url)


app.command()(run)
app.add_typer(pipeline.app, name="pipeline")
app.command(name="compile")(compile_command)
app.add_typer(kfp.app, name="kfp")
app.add_typer(automation.schedules, name="schedules")
app.add_typer(automation.triggers, name="triggers")
app.add_typer(automation.events, name="events")
app.add_typer(monitoring.monitor, name="monitor")
app.add_typer(monitoring.policies, name="policies")
app.command()(init)
app.command()(demo)
app.command()(lineage)
app.add_typer(runs.app, name="runs")
app.add_typer(experiments.app, name="experiments")
app.add_typer(artifacts.app, name="artifacts")
app.add_typer(models.app, name="models")
app.command()(serve)
app.command()(deploy)
app.command()(up)
app.add_typer(deployments.app, name="deployments")
app.add_typer(access.projects, name="projects")
app.add_typer(access.members, name="members")
app.add_typer(access.users, name="users")
app.add_typer(access.tokens, name="tokens")
app.add_typer(db.app, name="db")


@app.command()
def version() -> None:
    """Print treadle's version."""
    from treadle import __version__

    typer.echo(__version__)


def _take_url(args: list[str]) -> list[str]:
    """`--url URL` may come anywhere, like --debug (click wants it before the command)."""
    out: list[str] = []
    rest = iter(args)
    for arg in rest:
        if arg == "--":
            out += [arg, *rest]
            break
        if arg.startswith("--url="):
            common.use_url(arg.removeprefix("--url="))
        elif arg == "--url":
            value = next(rest, None)
            if value is None:  # let click say the option wants a value
                out.append(arg)
            else:
                common.use_url(value)
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> None:
    """Entry point: one-line errors with a hint; --debug shows the traceback instead."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    args = _take_url(args)
    try:
        code = app(args=args, prog_name="treadle", standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console().print(
            "interrupted: a run in progress is left CANCELLED; `treadle runs resume ID` finishes it"
        )
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors: click prints them with the usage line
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            err_console().print(f"error: {exc.format_message()}")
        sys.exit(exc.exit_code)
    except TreadleError as exc:
        if debug:
            raise
        err_console().print(f"[red]error:[/] {escape(exc.message)}", soft_wrap=True)
        if exc.hint:
            err_console().print(f"  {escape(exc.hint)}", soft_wrap=True)
        sys.exit(1)
    # without standalone mode, click hands back the code of a `typer.Exit` it caught
    if isinstance(code, int) and code != 0:
        sys.exit(code)


if __name__ == "__main__":
    main()
