"""`treadle monitor` and `treadle policies`: live statistics of deployments, and the
closed loop that acts on them. Both live on a server (`treadle up` runs them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from treadle.cli import common
from treadle.cli.automation import _assignments, _client, _table
from treadle.errors import InvalidInputError

monitor = typer.Typer(
    help="Monitors of deployments: drift, live performance, service health and alerts.",
    no_args_is_help=True,
)
policies = typer.Typer(
    help="Policies: the closed loop (alert → retrain → gate → canary → promote) written down.",
    no_args_is_help=True,
)


@monitor.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Monitor name.")],
    deployment: Annotated[str, typer.Option("--deployment", "-d", help="The deployment.")],
    every: Annotated[
        str,
        typer.Option(help="Window size: 1000 (predictions) or 60s (seconds of predictions)."),
    ] = "1000",
    rule: Annotated[
        list[str] | None,
        typer.Option(
            "--rule",
            "-r",
            help="Alert rule, e.g. 'drift: drift_share > 0.3 for 2 windows'; repeat.",
        ),
    ] = None,
    threshold: Annotated[
        list[str] | None,
        typer.Option(
            "--threshold",
            "-t",
            help="KEY=VALUE: ks, psi, js, wasserstein, alpha, share, label_wait (s).",
        ),
    ] = None,
) -> None:
    """Watch a deployment's predictions in windows and raise alerts.

    Example: treadle monitor create churn-watch -d churn-api --every 500
    -r 'drift: drift_share > 0.3 for 2 windows' -r 'accuracy < 0.85'
    """
    text = every.strip().lower()
    kind = "seconds" if text.endswith("s") else "rows"
    try:
        size = int(text.rstrip("s"))
    except ValueError:
        raise InvalidInputError(f"--every {every!r} is not a count or seconds (60s)") from None
    thresholds: dict[str, float | str] = {}
    for key, value in _assignments(threshold, "--threshold").items():
        try:
            thresholds[key] = float(value)
        except ValueError:
            thresholds[key] = value
    made = _client().create_monitor(
        name,
        deployment,
        window_kind=kind,
        window_size=size,
        thresholds=thresholds,
        rules=rule or [],
    )
    unit = "predictions" if kind == "rows" else "seconds"
    common.console().print(
        f"monitor {made.name}: {deployment} every {size} {unit}; {len(made.rules)} alert rule(s)"
    )


@monitor.command("list")
def list_monitors() -> None:
    """List monitors and their state."""
    rows = [
        [
            m.name,
            m.deployment,
            f"{m.window_size} {'rows' if m.window_kind == 'rows' else 's'}",
            m.state,
            m.detail,
        ]
        for m in _client().list_monitors()
    ]
    _table(["name", "deployment", "window", "state", "detail"], rows)


@monitor.command("windows")
def windows(
    name: Annotated[str, typer.Argument(help="Monitor name.")],
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
) -> None:
    """The monitor's latest windows: drift, live performance and latency."""
    rows = []
    for w in _client().monitor_windows(name, limit):
        m = w.stats.get("metrics", {})
        drifted = (w.stats.get("drift") or {}).get("drifted", [])
        rows.append(
            [
                str(w.seq),
                common.when(w.end_ts),
                str(w.rows),
                w.status,
                _num(m.get("drift_share")),
                ", ".join(drifted[:4]) + ("…" if len(drifted) > 4 else ""),
                _num(m.get("accuracy") if m.get("accuracy") is not None else m.get("rmse")),
                _num(m.get("p99_ms")),
            ]
        )
    _table(["#", "end", "rows", "status", "drift share", "drifted", "acc/rmse", "p99 ms"], rows)


def _num(value: object) -> str:
    return "-" if value is None else f"{float(value):.3g}"  # type: ignore[arg-type]


@monitor.command("alerts")
def alerts(
    name: Annotated[str | None, typer.Argument(help="Monitor name (default: all).")] = None,
    firing: Annotated[bool, typer.Option("--firing", help="Only those still firing.")] = False,
) -> None:
    """Alerts, newest first."""
    rows = [
        [
            common.when(a.fired_at),
            a.name,
            a.rule,
            _num(a.value),
            a.state,
            common.when(a.resolved_at),
        ]
        for a in _client().list_alerts(name, "firing" if firing else None)
    ]
    _table(["fired", "alert", "rule", "value", "state", "resolved"], rows)


@monitor.command("report")
def report(
    name: Annotated[str, typer.Argument(help="Monitor name.")],
    html: Annotated[Path, typer.Option("--html", help="Where to write the report.")] = Path(
        "report.html"
    ),
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Windows to include.")] = 200,
) -> None:
    """Write a self-contained HTML report with plots.

    Reference vs live distributions, drift over time, performance and latency over time,
    alerts and windows."""
    from treadle.monitoring.report import render_html

    client = _client()
    found = client.get_monitor(name)
    found_windows = client.monitor_windows(name, limit)
    found_alerts = client.list_alerts(name)
    html.parent.mkdir(parents=True, exist_ok=True)
    html.write_text(render_html(found, list(reversed(found_windows)), found_alerts))
    common.console().print(f"wrote {html} ({len(found_windows)} windows)")


@monitor.command("delete")
def delete(name: Annotated[str, typer.Argument(help="Monitor name.")]) -> None:
    """Delete a monitor, its windows and alerts."""
    _client().delete_monitor(name)
    common.console().print(f"monitor {name} deleted")


# -- policies -------------------------------------------------------------------------------


@policies.command("apply")
def apply(
    path: Annotated[
        Path,
        typer.Argument(
            help="A policy file: YAML, or Python (.py) defining `policy`, or `policies` "
            "for several."
        ),
    ],
    replace: Annotated[
        bool, typer.Option("--replace", help="Change the policy of that name if it exists.")
    ] = False,
) -> None:
    """Create or change a policy from a YAML or Python file.

    A .py file is imported (its folder importable) and defines `policy`, or `policies`
    (a list): dicts in the YAML's shape, or built with treadle.loop's define_policy,
    on_alert, retrain, register, canary and promote. Each policy is applied in turn.

    Example: treadle policies apply examples/loop/regression/policy.py
    """
    from treadle.loop.policy import read_policies

    specs = read_policies(path)
    client = _client()
    for spec in specs:
        made = client.put_policy(spec, replace=replace)
        acting = escape(str(spec.get("on", {})))
        common.console().print(f"policy {escape(made.name)}: acting on {acting}")


@policies.command("list")
def list_policies() -> None:
    """List the project's policies."""
    rows = [
        [
            p.name,
            json.dumps(p.spec.get("on", {})),
            str(p.spec.get("run", {}).get("pipeline")),
            "yes" if p.enabled else "no",
        ]
        for p in _client().list_policies()
    ]
    _table(["name", "on", "runs", "enabled"], rows)


@policies.command("runs")
def runs(
    name: Annotated[str | None, typer.Argument(help="Policy name (default: all).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 10,
) -> None:
    """What policies did, step by step, and why.

    The alert, the run, the gate, the canary, the promotion or rollback."""
    console = common.console()
    for r in _client().policy_runs(name, limit=limit):
        console.print(f"[bold]policy run {r.id[:8]}[/] {r.state} ({common.when(r.created_at)})")
        for s in r.steps:
            console.print(
                f"  {common.when(s.get('at'))}  {s.get('step', ''):<9} {s.get('status', ''):<12} "
                f"{escape(str(s.get('detail', '')))}"
            )


@policies.command("enable")
def enable(name: Annotated[str, typer.Argument(help="Policy name.")]) -> None:
    """Act on events again."""
    _client().set_policy_enabled(name, True)
    common.console().print(f"policy {name} enabled")


@policies.command("disable")
def disable(name: Annotated[str, typer.Argument(help="Policy name.")]) -> None:
    """Stop acting on new events."""
    _client().set_policy_enabled(name, False)
    common.console().print(f"policy {name} disabled")


@policies.command("delete")
def delete_policy(name: Annotated[str, typer.Argument(help="Policy name.")]) -> None:
    """Delete a policy and its history."""
    _client().delete_policy(name)
    common.console().print(f"policy {name} deleted")
