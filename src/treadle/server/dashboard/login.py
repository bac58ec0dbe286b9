"""Logging in with a token, logging out, and the way in (`/ui/` → the user's project)."""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from treadle.errors import TreadleError
from treadle.server.auth import store_of
from treadle.server.dashboard.render import page
from treadle.server.dashboard.seat import PREFIX, sessions_of
from treadle.server.dashboard.session import COOKIE, LoginNeeded, check_csrf

router = APIRouter()
LOGIN_COOKIE = "treadle_login"


def _safe_next(target: str) -> str:
    """Only a page of this dashboard: never another site (`//host`, `/\\host`)."""
    if target.startswith(PREFIX + "/") and "\\" not in target and "//" not in target:
        return target
    return PREFIX + "/"


def _form(request: Request, status: int = 200, error: str = "", next_url: str = "") -> Response:
    nonce = secrets.token_urlsafe(24)
    response = page(
        request, "login.html", status, nonce=nonce, error=error, next_url=_safe_next(next_url)
    )
    response.set_cookie(
        LOGIN_COOKIE, nonce, httponly=True, samesite="strict", path=PREFIX + "/login"
    )
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "") -> Response:
    return _form(request, next_url=next)


@router.post("/login")
def login(
    request: Request,
    token: str = Form(max_length=200),
    nonce: str = Form(max_length=100),
    next: str = Form(default="", max_length=2000),
) -> Response:
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(expected.encode(), nonce.encode()):
        return _form(request, 403, "the login form expired; try again", next)
    try:
        session, _ = sessions_of(request).open(store_of(request), token)
    except TreadleError as exc:
        return _form(request, 401, exc.message, next)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(COOKIE, session.id, httponly=True, samesite="strict", path=PREFIX)
    response.delete_cookie(LOGIN_COOKIE, path=PREFIX + "/login")
    return response


@router.post("/logout")
def logout(request: Request, csrf: str = Form(max_length=100)) -> Response:
    sessions = sessions_of(request)
    session_id = request.cookies.get(COOKIE, "")
    try:
        session, _ = sessions.find(store_of(request), session_id)
        check_csrf(session, csrf)
        sessions.close(session.id)
    except LoginNeeded:
        pass
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX)
    return response


@router.get("/")
def enter(request: Request) -> Response:
    """The user's own project: the configured default if they are in it, else the first."""
    store = store_of(request)
    _, principal = sessions_of(request).find(store, request.cookies.get(COOKIE))
    projects = store.projects.list_projects()
    if not principal.user.is_admin:
        mine = store.auth.projects_of(principal.user.id)
        projects = [p for p in projects if p.id in mine]
    if not projects:
        return page(
            request,
            "error.html",
            403,
            message=f"{principal.name} is not a member of any project",
            hint="ask an owner to add you: treadle members set USER viewer",
        )
    default = store.settings.project
    chosen = next((p for p in projects if p.name == default), projects[0])
    return RedirectResponse(f"{PREFIX}/p/{quote(chosen.name, safe='')}/", status_code=303)
