"""`treadle deployments`: managed deployments, their revisions and traffic, and the true
labels of their predictions."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from treadle.cli import common
from treadle.cli.actions import actions
from treadle.cli.serve import parse_percent, serve_deployment
from treadle.errors import ConfigError, InvalidInputError, TreadleError

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


FEEDBACK_BATCH = 10_000
"""Lines of a --file sent per request: well under the model server's 8 MiB body limit."""


@app.command()
def feedback(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    request_id: Annotated[
        str | None,
        typer.Option(help="The id the prediction's answer carried (x-request-id)."),
    ] = None,
    label: Annotated[
        str | None,
        typer.Option(
            help="The true label: JSON when it parses (1, 0.5, true, '\"yes\"'), else text."
        ),
    ] = None,
    row: Annotated[
        int | None, typer.Option(help="Which row of a request of several (from 0).")
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            help='JSON Lines of feedback objects, e.g. {"request_id": "…", "label": 1}.',
            exists=True,
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Send the true labels of requests a deployment answered, through the server, to the
    model server `treadle up` runs for it (the deployment needs a port)."""
    if not common.remote():
        raise ConfigError(
            "`treadle deployments feedback` sends labels through a treadle server, and "
            "TREADLE_URL (or --url) is not set",
            "set TREADLE_URL and TREADLE_TOKEN, or POST the labels to the model server's "
            "own /feedback",
        )
    if file is not None:
        if request_id is not None or label is not None or row is not None:
            raise InvalidInputError(
                "--file takes the labels from the file", "drop --request-id, --label and --row"
            )
        accepted = _send_file(name, file)
    elif request_id is None or label is None:
        raise InvalidInputError(
            "--request-id and --label are both needed",
            "e.g. --request-id 7f3a… --label 1, or --file labels.jsonl for many",
        )
    else:
        accepted = common.client().send_feedback(name, request_id, _label(label), row=row)
    common.console().print(f"{name}: {accepted} label{'' if accepted == 1 else 's'} accepted")


def _refuse_constant(constant: str) -> Any:
    """NaN and Infinity, which Python's JSON parser takes and JSON proper does not."""
    raise ValueError(f"{constant} is not a JSON value")


def _label(text: str) -> Any:
    """`1`, `0.5`, `true` and `"yes"` as JSON; anything else (`yes`, `NaN`) as text."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except ValueError:
        return text


def _send_file(name: str, file: Path) -> int:
    items: list[dict[str, Any]] = []
    lines: list[int] = []  # the line number of each item
    with file.open(encoding="utf-8") as lines_of:
        for number, line in enumerate(lines_of, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line, parse_constant=_refuse_constant)
            except ValueError as exc:
                raise InvalidInputError(f"{file}, line {number}: not JSON ({exc})") from None
            if not isinstance(item, dict):
                raise InvalidInputError(
                    f"{file}, line {number}: not a feedback object",
                    'write one {"request_id": ..., "label": ...} a line',
                )
            items.append(item)
            lines.append(number)
    if not items:
        raise InvalidInputError(f"{file} holds no feedback", "write one object a line")
    accepted = 0
    for start in range(0, len(items), FEEDBACK_BATCH):
        batch = items[start : start + FEEDBACK_BATCH]
        try:
            accepted += common.client().send_feedback(name, feedback=batch)
        except TreadleError as exc:
            # a refusal names the item by its place in the batch (feedback[3].label) or by
            # its request id: name its line instead, and say what earlier batches delivered
            message = exc.message
            found = re.match(r"feedback(?:\[(\d+)\]|\.(\d+))\.?", message)
            if found is not None:
                at = lines[start + int(found.group(1) or found.group(2))]
                message = f"{file}, line {at}: {message[found.end() :] or message}"
            else:
                named = [
                    i
                    for i, item in enumerate(batch)
                    if isinstance(item.get("request_id"), str)
                    and repr(item["request_id"]) in message
                ]
                if named:
                    message = f"{file}, line {lines[start + named[0]]}: {message}"
            sent = f"the {accepted} labels before line {lines[start]} were accepted"
            hint = "; ".join(part for part in (exc.hint, sent if accepted else "") if part)
            raise type(exc)(message, hint) from None
    return accepted
