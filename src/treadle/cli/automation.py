"""`treadle schedules`, `treadle triggers` and `treadle events`: automated runs, which
`treadle up` fires. They talk to the server (TREADLE_URL or --url)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from treadle.cli import common
from treadle.errors import ConfigError, InvalidInputError

if TYPE_CHECKING:
    from treadle.client import Client

schedules = typer.Typer(
    help="Cron schedules that run a pipeline's current version (fired by `treadle up`).",
    no_args_is_help=True,
)
triggers = typer.Typer(
    help="Triggers that turn events (webhooks, finished runs, new models…) into runs.",
    no_args_is_help=True,
)
events = typer.Typer(help="Events that triggers act on.", no_args_is_help=True)

Param = Annotated[
    list[str] | None,
    typer.Option("--param", "-p", help="A pipeline parameter as KEY=VALUE; repeat for more."),
]


def _client() -> Client:
    if not common.remote():
        raise ConfigError(
            "schedules and triggers live on a treadle server, which fires them",
            "start one with `treadle up` and set TREADLE_URL and TREADLE_TOKEN (or --url)",
        )
    return common.client()


def _assignments(values: list[str] | None, option: str = "-p") -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"{option} {item!r} is not KEY=VALUE")
        out[key.strip()] = value
    return out


def _table(columns: list[str], rows: list[list[str]]) -> None:
    from rich.table import Table

    table = Table(box=None)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    common.console().print(table)


# -- schedules ----------------------------------------------------------------------------


@schedules.command("create")
def create_schedule(
    name: Annotated[str, typer.Argument(help="Schedule name.")],
    pipeline: Annotated[str, typer.Option("--pipeline", help="The pipeline to run.")],
    cron: Annotated[str, typer.Option("--cron", help="When: '0 3 * * *' is 03:00 daily.")],
    tz: Annotated[str, typer.Option("--tz", help="Time zone of the cron times.")] = "UTC",
    param: Param = None,
    catchup: Annotated[
        str,
        typer.Option(help="Missed due times: skip, once (run the newest), all (up to the cap)."),
    ] = "skip",
    max_catchup: Annotated[int, typer.Option(min=1, max=1000, help="The cap for all.")] = 10,
    concurrency: Annotated[
        str, typer.Option(help="If the last run is still going: allow, forbid, replace.")
    ] = "allow",
) -> None:
    """Create a cron schedule for a pipeline's current version.

    Example: treadle schedules create nightly --pipeline training --cron '0 3 * * *'
    --tz Europe/Berlin --concurrency forbid
    """
    made = _client().create_schedule(
        name,
        pipeline,
        cron,
        timezone=tz,
        params=_assignments(param),
        catchup=catchup,
        max_catchup=max_catchup,
        concurrency=concurrency,
    )
    common.console().print(
        f"schedule {made.name}: {pipeline} at '{made.cron}' ({made.timezone}); next due "
        f"{_next(made.cron, made.timezone)}"
    )


def _next(cron: str, tz: str) -> str:
    from treadle.automation.cron import next_due

    return common.when(next_due(cron, tz, time.time()))


@schedules.command("list")
def list_schedules() -> None:
    """List the project's schedules and when each is next due."""
    rows = [
        [
            s.name,
            s.pipeline,
            s.cron,
            s.timezone,
            "paused" if s.paused else _next(s.cron, s.timezone),
            s.catchup,
            s.concurrency,
        ]
        for s in _client().list_schedules()
    ]
    _table(["name", "pipeline", "cron", "tz", "next", "catch-up", "concurrency"], rows)


@schedules.command("fires")
def schedule_fires(
    name: Annotated[str, typer.Argument(help="Schedule name.")],
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
) -> None:
    """What each due time did: the run it started, or why none."""
    rows = [
        [common.when(f.due_at), common.when(f.fired_at), common.short(f.run_id), f.outcome]
        for f in _client().schedule_fires(name, limit)
    ]
    _table(["due", "fired", "run", "outcome"], rows)


@schedules.command("pause")
def pause(name: Annotated[str, typer.Argument(help="Schedule name.")]) -> None:
    """Stop firing a schedule until it is resumed."""
    _client().pause_schedule(name)
    common.console().print(f"schedule {name} paused")


@schedules.command("resume")
def resume(name: Annotated[str, typer.Argument(help="Schedule name.")]) -> None:
    """Fire a paused schedule again, from now on."""
    made = _client().resume_schedule(name)
    common.console().print(f"schedule {name} resumed; next due {_next(made.cron, made.timezone)}")


@schedules.command("delete")
def delete_schedule(name: Annotated[str, typer.Argument(help="Schedule name.")]) -> None:
    """Delete a schedule and its fire history."""
    _client().delete_schedule(name)
    common.console().print(f"schedule {name} deleted")


# -- triggers -----------------------------------------------------------------------------


@triggers.command("create")
def create_trigger(
    name: Annotated[str, typer.Argument(help="Trigger name.")],
    on: Annotated[
        str,
        typer.Option(
            "--on",
            help="webhook, manual, run.finished, model.registered, artifact.created or "
            "monitor.alert.",
        ),
    ],
    pipeline: Annotated[str, typer.Option("--pipeline", help="The pipeline to run.")],
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param", "-p", help="KEY=VALUE, or KEY=$event.FIELD to take it from the event."
        ),
    ] = None,
    where: Annotated[
        list[str] | None,
        typer.Option("--where", help="FIELD=VALUE the event must have (e.g. state=SUCCEEDED)."),
    ] = None,
) -> None:
    """Create a trigger that runs a pipeline on every event of a kind.

    Example: treadle triggers create retrain --on artifact.created --where name=dataset
    --pipeline training -p data_uri='$event.uri'
    """
    made = _client().create_trigger(
        name,
        on,
        pipeline,
        params=_assignments(param),
        filter=_assignments(where, "--where"),
    )
    console = common.console()
    console.print(f"trigger {made.trigger.name}: on {on} run {pipeline}")
    if made.secret:
        console.print(f"webhook URL: {common.settings().url}{made.hook}")
        console.print(f"signing secret (shown this once, keep it): {made.secret}")
        console.print(
            "sign each delivery: X-Treadle-Timestamp: <unix seconds>, X-Treadle-Signature: "
            "sha256=HMAC-SHA256(secret, TIMESTAMP + '.' + body)"
        )


@triggers.command("list")
def list_triggers() -> None:
    """List the project's triggers."""
    rows = [
        [
            t.name,
            t.kind,
            t.pipeline,
            json.dumps(t.params) if t.params else "",
            json.dumps(t.filter) if t.filter else "",
            "yes" if t.enabled else "no",
        ]
        for t in _client().list_triggers()
    ]
    _table(["name", "on", "pipeline", "params", "where", "enabled"], rows)


@triggers.command("fire")
def fire(
    name: Annotated[str, typer.Argument(help="Trigger name.")],
    payload: Annotated[
        str, typer.Option(help="The event's payload as JSON, e.g. '{\"rows\": 300}'.")
    ] = "{}",
) -> None:
    """Fire a trigger by hand (a manual event with this payload)."""
    try:
        parsed: Any = json.loads(payload)
    except ValueError:
        raise InvalidInputError(f"--payload {payload!r} is not JSON") from None
    if not isinstance(parsed, dict):
        raise InvalidInputError("--payload must be a JSON object")
    done = _client().fire_trigger(name, parsed)
    run = f"run {done.run_id}" if done.run_id else "no run"
    common.console().print(f"trigger {done.trigger}: {done.outcome} ({run})")


@triggers.command("fires")
def trigger_fires(
    name: Annotated[str, typer.Argument(help="Trigger name.")],
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
) -> None:
    """What each event did: the run it started, or why none."""
    rows = [
        [common.when(f.fired_at), common.short(f.event_id), common.short(f.run_id), f.outcome]
        for f in _client().trigger_fires(name, limit)
    ]
    _table(["fired", "event", "run", "outcome"], rows)


@triggers.command("enable")
def enable(name: Annotated[str, typer.Argument(help="Trigger name.")]) -> None:
    """Act on events again."""
    _client().set_trigger_enabled(name, True)
    common.console().print(f"trigger {name} enabled")


@triggers.command("disable")
def disable(name: Annotated[str, typer.Argument(help="Trigger name.")]) -> None:
    """Stop acting on events (those that arrive meanwhile are let go)."""
    _client().set_trigger_enabled(name, False)
    common.console().print(f"trigger {name} disabled")


@triggers.command("delete")
def delete_trigger(name: Annotated[str, typer.Argument(help="Trigger name.")]) -> None:
    """Delete a trigger and its fire history."""
    _client().delete_trigger(name)
    common.console().print(f"trigger {name} deleted")


@events.command("list")
def list_events(
    kind: Annotated[str | None, typer.Option(help="Only events of this kind.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
) -> None:
    """List recent events, newest first."""
    rows = [
        [common.when(e.created_at), e.kind, common.short(e.id), json.dumps(e.payload)[:100]]
        for e in _client().list_events(kind, limit)
    ]
    _table(["when", "kind", "id", "payload"], rows)
