"""Monitoring: each monitor's drift per feature over time, a feature's distribution in
the reference and in the newest window, live performance, and its alerts with what they
triggered (trigger fires, policy runs)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from treadle.server.dashboard import charts
from treadle.server.dashboard.deployments import health_charts
from treadle.server.dashboard.seat import Seat, seat, show
from treadle.store.records import MonitorWindowRecord

router = APIRouter()
WINDOWS = 100
PERFORMANCE = ("accuracy", "f1", "auc", "mae", "rmse")


def _drift_heatmap(windows: list[MonitorWindowRecord]) -> dict[str, Any] | None:
    features = sorted(
        {
            k[len("feature:") :]
            for w in windows
            for k in (w.stats.get("metrics") or {})
            if k.startswith("feature:")
        }
    )
    if not features:
        return None
    xs = [w.seq for w in windows]
    values = [
        [(w.stats.get("metrics") or {}).get(f"feature:{f}") for w in windows] for f in features
    ]
    return charts.heatmap("drift per feature (effect size) by window", xs, features, values)


def _distribution(
    window: MonitorWindowRecord | None, feature: str
) -> tuple[dict[str, Any] | None, list[str], str]:
    """Reference vs live of one feature in a window: (figure, features, chosen)."""
    drift = (window.stats.get("drift") if window else None) or {}
    entries = {str(f.get("name")): f for f in drift.get("features", []) if isinstance(f, dict)}
    if not entries:
        return None, [], ""
    names = sorted(entries, key=lambda n: -float(entries[n].get("effect") or 0))
    chosen = feature if feature in entries else names[0]
    entry = entries[chosen]
    curves = {}
    for side in ("reference", "live"):
        part = entry.get(side) or {}
        if isinstance(part, dict) and "levels" in part and "percentiles" in part:
            curves[side] = (part["levels"], part["percentiles"])
    if len(curves) == 2:
        return charts.quantiles(f"{chosen}: reference vs live (quantiles)", curves), names, chosen
    bars = {}
    for side in ("reference", "live"):
        part = entry.get(side) or {}
        shares = part.get("frequencies") if isinstance(part, dict) else None
        if isinstance(shares, dict):
            bars[side] = shares
    if bars:
        labels = sorted({k for shares in bars.values() for k in shares})
        series = {side: [shares.get(k, 0) for k in labels] for side, shares in bars.items()}
        figure = charts.grouped_bars(f"{chosen}: reference vs live", labels, series)
        return figure, names, chosen
    return None, names, chosen


def _triggered(where: Seat, event_id: str | None) -> list[dict[str, Any]]:
    """What an alert's event started: runs of triggers, and policy runs."""
    if not event_id:
        return []
    store = where.store
    out: list[dict[str, Any]] = []
    for trigger in store.automation.list_triggers(where.project_id, "monitor.alert"):
        for fire in store.automation.list_trigger_fires(trigger.id, limit=200):
            if fire.event_id == event_id:
                out.append(
                    {
                        "what": f"trigger {trigger.name}",
                        "outcome": fire.outcome,
                        "run_id": fire.run_id,
                    }
                )
    for run in store.policies.list_runs(where.project_id, limit=200):
        if run.event_id == event_id:
            policy = store.policies.get_policy_by_id(run.policy_id)
            out.append(
                {
                    "what": f"policy {policy.name}",
                    "outcome": f"{run.state} ({run.step})",
                    "run_id": (run.context or {}).get("run_id"),
                }
            )
    return out


@router.get("/p/{project}/monitoring", response_class=HTMLResponse)
def monitor_list(request: Request, where: Seat = Depends(seat)) -> HTMLResponse:
    store = where.store
    monitors = store.monitoring.list_monitors(where.project_id)
    alerts = store.monitoring.list_alerts(where.project_id, limit=50)
    return show(
        request,
        where,
        "monitors.html",
        monitors=monitors,
        alerts=alerts,
        names={m.id: m.name for m in monitors},
    )


@router.get("/p/{project}/monitoring/{name}", response_class=HTMLResponse)
def monitor_page(
    name: str,
    request: Request,
    where: Seat = Depends(seat),
    feature: Annotated[str, Query(max_length=250)] = "",
) -> HTMLResponse:
    store = where.store
    monitor = store.monitoring.get_monitor(where.project_id, name)
    windows = list(reversed(store.monitoring.list_windows(monitor.id, limit=WINDOWS)))
    xs = [w.seq for w in windows]
    figures: list[dict[str, Any]] = []
    share = [(w.stats.get("metrics") or {}).get("drift_share") for w in windows]
    if any(v is not None for v in share):
        figures.append(
            charts.lines("share of drifted features", {"drift share": (xs, share)}, "window")
        )
    heat = _drift_heatmap(windows)
    latest = windows[-1] if windows else None
    distribution, features, chosen = _distribution(latest, feature)
    performance = {
        key: (xs, [(w.stats.get("metrics") or {}).get(key) for w in windows]) for key in PERFORMANCE
    }
    performance = {k: v for k, v in performance.items() if any(x is not None for x in v[1])}
    if performance:
        figures.append(charts.lines("live performance", performance, "window"))
    figures += health_charts(windows) if windows else []
    alerts = [
        {"alert": a, "triggered": _triggered(where, a.event_id)}
        for a in store.monitoring.list_alerts(where.project_id, monitor.id, limit=50)
    ]
    return show(
        request,
        where,
        "monitor.html",
        charts=bool(figures or heat or distribution),
        monitor=monitor,
        windows=list(reversed(windows)),
        heat=heat,
        distribution=distribution,
        features=features,
        chosen=chosen,
        figures=figures,
        alerts=alerts,
        has_performance=bool(performance),
    )
