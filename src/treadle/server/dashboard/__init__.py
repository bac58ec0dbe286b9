"""The web dashboard: server-rendered pages over the store, under /ui of `treadle up`.

One module per page group (home, runs, experiments, models, deployments, monitoring,
automation), each thin over the store and over the API's own route functions for
changes, behind the API's access checks (`seat.py`). Charts are drawn by the plotly.js
that ships inside the installed plotly package, served from here: a page fetches
nothing from the internet.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from treadle.errors import NotFoundError, TreadleError
from treadle.server.dashboard import (
    automation,
    deployments,
    experiments,
    home,
    login,
    models,
    monitoring,
    runs,
)
from treadle.server.dashboard.render import page
from treadle.server.dashboard.seat import PREFIX
from treadle.server.dashboard.session import LoginNeeded, Sessions

DASHBOARD = PREFIX + "/"
FORM_TYPES = ("application/x-www-form-urlencoded",)
STATIC = Path(__file__).parent / "static"


def plotly_bundle() -> Path | None:
    """plotly.min.js inside the installed plotly package (found without importing it),
    or None without plotly: the pages then show their tables and say charts need it."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    return found if found.is_file() else None


def _login_needed(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginNeeded)
    if request.method != "GET":
        return page(request, "error.html", 401, message=exc.message, hint="log in again")
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{PREFIX}/login?{urlencode({'next': target})}", status_code=303)


def _error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TreadleError)
    return page(request, "error.html", exc.http_status, message=exc.message, hint=exc.hint)


def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    message = "no such page" if exc.status_code == 404 else str(exc.detail)
    return page(request, "error.html", exc.status_code, message=message, hint="")


def _invalid(request: Request, exc: Exception) -> Response:
    return page(request, "error.html", 422, message="that form or link is not valid", hint="")


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard under /ui of `app` (after its store is set), and send `/`
    there."""
    from fastapi.exceptions import RequestValidationError

    ui = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    for key in ("store", "runs", "dispatcher"):
        setattr(ui.state, key, getattr(app.state, key, None))
    ui.state.sessions = Sessions()
    ui.state.experiment_names = {}
    ui.add_exception_handler(LoginNeeded, _login_needed)
    ui.add_exception_handler(TreadleError, _error)
    ui.add_exception_handler(StarletteHTTPException, _http_error)
    ui.add_exception_handler(RequestValidationError, _invalid)
    bundle = plotly_bundle()

    @ui.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_js() -> FileResponse:
        if bundle is None:
            raise NotFoundError("plotly is not installed", "pip install 'treadle[server]'")
        return FileResponse(
            bundle,
            media_type="text/javascript",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    for module in (login, home, runs, experiments, models, deployments, monitoring, automation):
        ui.include_router(module.router)
    ui.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount(PREFIX, ui)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(DASHBOARD, status_code=307)
