"""Experiments: their runs as a table with params and metrics as columns, a
parallel-coordinates plot of a sweep, and one metric against one param."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from treadle.server.dashboard import charts
from treadle.server.dashboard.seat import Seat, seat, show

router = APIRouter()

PAGE = 100
MAX_COLUMNS = 40


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None


@router.get("/p/{project}/experiments", response_class=HTMLResponse)
def experiment_list(request: Request, where: Seat = Depends(seat)) -> HTMLResponse:
    return show(
        request,
        where,
        "experiments.html",
        experiments=where.store.projects.list_experiments(where.project_id),
    )


@router.get("/p/{project}/experiments/{name}", response_class=HTMLResponse)
def experiment_page(
    name: str,
    request: Request,
    where: Seat = Depends(seat),
    color: Annotated[str, Query(max_length=250)] = "",
    x: Annotated[str, Query(max_length=250)] = "",
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> HTMLResponse:
    store = where.store
    experiment = store.projects.find_experiment(where.project_id, name)
    rows = store.runs.list_runs(
        where.project_id, experiment_id=experiment.id, limit=PAGE + 1, offset=offset
    )
    runs, more = rows[:PAGE], len(rows) > PAGE
    params = {r.id: store.tracking.get_params(r.id) for r in runs}
    metrics = {r.id: store.tracking.latest_metrics(r.id) for r in runs}
    param_keys = sorted({k for p in params.values() for k in p})[:MAX_COLUMNS]
    metric_keys = sorted({k for m in metrics.values() for k in m})[:MAX_COLUMNS]
    columns: dict[str, list[float | None]] = {}
    numeric_params = []
    for key in param_keys:
        values = [_number(params[r.id].get(key)) for r in runs]
        if sum(v is not None for v in values) >= 2:
            columns[f"param: {key}"] = values
            numeric_params.append(key)
    for key in metric_keys:
        columns[key] = [metrics[r.id].get(key) for r in runs]
    # unless asked, the metric and the param that most runs have
    common = sorted(metric_keys, key=lambda k: (-sum(k in metrics[r.id] for r in runs), k))
    color_by = color if color in metric_keys else (common[0] if common else "")
    x_param = x if x in numeric_params else (numeric_params[0] if numeric_params else "")
    names = [r.name for r in runs]
    figure = charts.parallel(
        f"{name}: params and metrics of {len(runs)} runs", names, columns, color_by
    )
    spread = None
    if x_param and color_by:
        spread = charts.scatter(
            f"{color_by} by {x_param}",
            names,
            columns[f"param: {x_param}"],
            columns[color_by],
            x_param,
            color_by,
        )
    return show(
        request,
        where,
        "experiment.html",
        charts=figure is not None or spread is not None,
        experiment=experiment,
        runs=runs,
        params=params,
        metrics=metrics,
        param_keys=param_keys,
        metric_keys=metric_keys,
        figure=figure,
        spread=spread,
        color_by=color_by,
        x_param=x_param,
        numeric_params=numeric_params,
        offset=offset,
        more=more,
        page=PAGE,
    )
