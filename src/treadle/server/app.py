"""The platform's REST API: FastAPI over the store, under /api/v1, behind tokens.

Routes are thin: they check access at the one choke point (`treadle.server.auth.need`),
call the store or the layers above it, and return records (the store's dataclasses are
the response schemas, so nothing is declared twice).
"""

from __future__ import annotations

import importlib.metadata
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from treadle.automation.triggers import Dispatcher
from treadle.errors import TreadleError
from treadle.server.dashboard import DASHBOARD, FORM_TYPES, mount_dashboard
from treadle.server.routes import (
    artifacts,
    audit,
    automation,
    deployments,
    external,
    health,
    models,
    monitoring,
    pipelines,
    policies,
    projects,
    runs,
    steps,
)
from treadle.server.routes.pipelines import BINARY_TYPES
from treadle.server.runpool import RunPool
from treadle.store import Store

API = "/api/v1"
MAX_BODY = 16 * 1024 * 1024
# endpoints whose body is a file rather than JSON, and the types they take
BINARY_ENDPOINTS = ("/pipelines/packages", external.OBJECTS)


class Guard:
    """Refuses, before any route runs: bodies over the limit (declared or streamed in
    chunks), a body that is not JSON on a JSON endpoint, and requests a web page on
    another origin sent (no drive-by writes from a browser)."""

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        problem = self._problem(scope, headers)
        if problem is None and scope["method"] in ("POST", "PUT", "PATCH"):
            body, complete = await self._read(receive)
            problem = self._body_problem(scope, headers, body, complete)
            receive = _replay(body, receive)
        if problem is not None:
            status, message, hint = problem
            response = JSONResponse({"error": message, "hint": hint}, status_code=status)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _read(self, receive: Receive) -> tuple[bytes, bool]:
        """The whole body, or (what was read, False) once it passes the limit."""
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return b"", False
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks), True

    def _problem(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str, str] | None:
        origin = headers.get("origin")
        if origin:
            host = headers.get("host", "")
            if urlsplit(origin).netloc != host:
                return 403, f"requests from {origin} are refused", "call the API directly"
        length = headers.get("content-length", "0")
        if length.isdigit() and int(length) > self.max_body:
            return 413, f"the body is over {self.max_body} bytes", "send less per request"
        return None

    def _body_problem(
        self, scope: Scope, headers: dict[str, str], body: bytes, complete: bool
    ) -> tuple[int, str, str] | None:
        if not complete:
            return 413, f"the body is over {self.max_body} bytes", "send less per request"
        kind = headers.get("content-type", "").partition(";")[0].strip().lower()
        path: str = scope["path"]
        if path.endswith(BINARY_ENDPOINTS):
            if kind not in BINARY_TYPES:
                return (
                    415,
                    f"this endpoint takes {' or '.join(BINARY_TYPES)}, not {kind or 'nothing'}",
                    "send the file's bytes with Content-Type: application/zip",
                )
            return None
        if path.startswith(DASHBOARD) and kind in FORM_TYPES:
            return None  # the dashboard's forms, each checked against its CSRF token
        if body and "json" not in kind:
            return (
                415,
                f"this endpoint takes application/json, not {kind or 'nothing'}",
                "send JSON with Content-Type: application/json",
            )
        return None


def _replay(body: bytes, original: Receive) -> Receive:
    """A `receive` that hands the already-read body to the app, then listens on."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await original()

    return receive


def _error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TreadleError)
    body: dict[str, Any] = {"error": exc.message}
    if exc.hint:
        body["hint"] = exc.hint
    return JSONResponse(body, status_code=exc.http_status)


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own refusals (an unknown path, a wrong method) in the API's shape."""
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(
        {"error": str(exc.detail)},
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {}
    field = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
    return JSONResponse(
        {
            "error": f"{field or 'request'}: {first.get('msg', 'invalid')}",
            "field": field,
            "details": [
                {"field": ".".join(map(str, e.get("loc", ()))), "error": e.get("msg")}
                for e in errors
            ],
        },
        status_code=422,
    )


def _version() -> str:
    try:
        return importlib.metadata.version("treadle")
    except importlib.metadata.PackageNotFoundError:
        return "0"


def create_app(
    store: Store, run_pool: RunPool | None = None, dispatcher: Dispatcher | None = None
) -> FastAPI:
    """The API over `store`; with `run_pool`, it also executes submitted runs, and with
    `dispatcher`, webhooks and manual fires start runs at once."""
    app = FastAPI(
        title="treadle",
        version=_version(),
        description="Pipelines, runs, artifacts, metrics, the model registry and deployments "
        "of a treadle home. Every route but /healthz needs `Authorization: Bearer <token>`.",
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.store = store
    app.state.runs = run_pool
    app.state.dispatcher = dispatcher
    app.add_exception_handler(TreadleError, _error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.include_router(health.router)
    for module in (
        projects,
        runs,
        steps,
        pipelines,
        artifacts,
        models,
        deployments,
        audit,
        automation,
        monitoring,
        policies,
        external,
    ):
        app.include_router(module.router, prefix=API)
    app.include_router(automation.hooks, prefix=API)
    mount_dashboard(app)
    app.add_middleware(Guard)
    return app
