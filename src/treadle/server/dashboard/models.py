"""Models: registered models, their versions, aliases and the gates they passed, lineage
back to the run and the data; promote and roll back an alias, each after a confirmation
page. Changes go through the API's own route functions, so the checks, the audit log and
the alias history are the same as over the API."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from treadle.errors import InvalidInputError, TreadleError
from treadle.server.dashboard.seat import Seat, acting, back, seat, show
from treadle.server.routes import models as models_api
from treadle.store.records import AliasEventRecord, ModelVersionRecord

router = APIRouter()


def _conditions(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _rollback_target(history: list[AliasEventRecord], alias: str) -> int | None:
    """The version `alias` pointed at before its last move, if it moved."""
    moves = [e for e in history if e.alias == alias]
    if not moves or moves[-1].to_version is None:
        return None
    return moves[-1].from_version


@router.get("/p/{project}/models", response_class=HTMLResponse)
def model_list(request: Request, where: Seat = Depends(seat)) -> HTMLResponse:
    store = where.store
    items = []
    for model in store.models.list_models(where.project_id):
        versions = store.models.list_versions(model.id)
        items.append(
            {
                "model": model,
                "versions": len(versions),
                "latest": versions[-1] if versions else None,
                "aliases": store.models.list_aliases(model.id),
            }
        )
    return show(request, where, "models.html", models=items)


@router.get("/p/{project}/models/{name}", response_class=HTMLResponse)
def model_page(name: str, request: Request, where: Seat = Depends(seat)) -> HTMLResponse:
    store = where.store
    model = store.models.get_model(where.project_id, name)
    versions = store.models.list_versions(model.id)
    aliases = store.models.list_aliases(model.id)
    history = store.models.alias_history(model.id)
    by_version: dict[int, list[str]] = {}
    for alias in aliases:
        by_version.setdefault(alias.version, []).append(alias.alias)
    rollbacks = {a.alias: _rollback_target(history, a.alias) for a in aliases}
    return show(
        request,
        where,
        "model.html",
        model=model,
        versions=list(reversed(versions)),
        aliases=aliases,
        by_version=by_version,
        history=list(reversed(history)),
        rollbacks=rollbacks,
        metric_keys=sorted({k for v in versions for k in v.metrics}),
    )


@router.get("/p/{project}/models/{name}/versions/{version}", response_class=HTMLResponse)
def version_page(
    name: str,
    version: int,
    request: Request,
    where: Seat = Depends(seat),
) -> HTMLResponse:
    store = where.store
    model = store.models.get_model(where.project_id, name)
    record = store.models.get_version(model.id, version)
    run = store.runs.get_run(record.run_id, where.project_id) if record.run_id else None
    inputs = []
    if record.step_run_id:
        for artifact_id in store.artifacts.step_input_ids(record.step_run_id):
            inputs.append(store.artifacts.get_artifact(artifact_id, where.project_id))
    serving = []
    for deployment in store.deployments.list_deployments(where.project_id):
        revision = store.deployments.current_revision(deployment.id)
        for target in revision.targets if revision else []:
            if target.get("version_id") == record.id:
                serving.append({"deployment": deployment, "target": target})
    aliases = [a.alias for a in store.models.list_aliases(model.id) if a.version_id == record.id]
    gates = [
        e
        for e in store.models.alias_history(model.id)
        if e.to_version == record.version and e.reason
    ]
    return show(
        request,
        where,
        "model_version.html",
        model=model,
        version=record,
        run=run,
        inputs=inputs,
        serving=serving,
        aliases=aliases,
        gates=gates,
    )


def _version_of(where: Seat, model_id: str, ref: str) -> ModelVersionRecord:
    if ref.isdigit():
        return where.store.models.get_version(model_id, int(ref))
    alias = where.store.models.get_alias(model_id, ref)
    return where.store.models.get_version_by_id(alias.version_id)


@router.get("/p/{project}/models/{name}/promote", response_class=HTMLResponse)
def confirm_promote(
    name: str,
    request: Request,
    where: Seat = Depends(seat),
    source: Annotated[str, Query(min_length=1, max_length=64)] = "challenger",
    target: Annotated[str, Query(min_length=1, max_length=64)] = "champion",
    require: Annotated[str, Query(max_length=5000)] = "",
) -> HTMLResponse:
    """What a promotion would change, with the button that does it."""
    store = where.store
    model = store.models.get_model(where.project_id, name)
    incoming = _version_of(where, model.id, source)
    current: Any = None
    try:
        current = store.models.get_alias(model.id, target)
    except TreadleError:
        current = None
    return show(
        request,
        where,
        "confirm_promote.html",
        model=model,
        source=source,
        target=target,
        incoming=incoming,
        current=current,
        require=_conditions(require),
        require_text=require,
    )


@router.post("/p/{project}/models/{name}/promote")
def promote(
    project: str,
    name: str,
    request: Request,
    csrf: str = Form(max_length=100),
    source: str = Form(min_length=1, max_length=64),
    target: str = Form(min_length=1, max_length=64),
    require: str = Form(default="", max_length=5000),
) -> RedirectResponse:
    where = acting(project, request, csrf)
    page = where.url("models", name)
    try:
        moved = models_api.promote(
            name,
            models_api.PromoteIn(source=source, target=target, require=_conditions(require)),
            request,
            where.access,
        )
    except TreadleError as exc:
        return back(where, page, "error", f"not promoted: {exc.message}")
    gates = ", ".join(g.condition for g in moved.gates) or "no gate conditions"
    return back(
        where,
        page,
        "ok",
        f"{target} → version {moved.alias.version} (from {source}; passed: {gates})",
    )


@router.get("/p/{project}/models/{name}/rollback", response_class=HTMLResponse)
def confirm_rollback(
    name: str,
    request: Request,
    where: Seat = Depends(seat),
    alias: Annotated[str, Query(min_length=1, max_length=64)] = "champion",
) -> HTMLResponse:
    store = where.store
    model = store.models.get_model(where.project_id, name)
    current = store.models.get_alias(model.id, alias)
    previous = _rollback_target(store.models.alias_history(model.id), alias)
    if previous is None:
        raise InvalidInputError(
            f"{name}@{alias} has no earlier version to go back to",
            "promote another version instead",
        )
    return show(
        request,
        where,
        "confirm_rollback.html",
        model=model,
        alias=alias,
        current=current,
        previous=store.models.get_version(model.id, previous),
    )


@router.post("/p/{project}/models/{name}/rollback")
def rollback(
    project: str,
    name: str,
    request: Request,
    csrf: str = Form(max_length=100),
    alias: str = Form(min_length=1, max_length=64),
    version: int = Form(ge=1, le=2**31),
) -> RedirectResponse:
    where = acting(project, request, csrf)
    page = where.url("models", name)
    try:
        moved = models_api.set_alias(
            name,
            alias,
            models_api.AliasIn(version=version, reason=f"rolled back by {where.user}"),
            request,
            where.access,
        )
    except TreadleError as exc:
        return back(where, page, "error", f"not rolled back: {exc.message}")
    return back(where, page, "ok", f"{alias} → version {moved.alias.version} (rolled back)")
