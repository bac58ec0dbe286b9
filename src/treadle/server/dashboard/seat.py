"""Who is looking at a dashboard page, in which project, and what they may do there.

Access goes through the API's own choke point (`treadle.server.auth.need`): a page of a
project the user is not a member of is a 404, as in the API, and a form that changes
something needs the same role the API route needs. Templates show a button only to a
role that may press it.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse

from treadle.server.auth import RANK, Access, Principal, need, store_of
from treadle.server.dashboard.render import page
from treadle.server.dashboard.session import COOKIE, Session, Sessions, check_csrf
from treadle.store import Store

PREFIX = "/ui"


def sessions_of(request: Request) -> Sessions:
    found: Sessions = request.app.state.sessions
    return found


@dataclasses.dataclass(frozen=True)
class Seat:
    session: Session
    principal: Principal
    access: Access
    store: Store
    projects: list[tuple[str, str]]
    """Every project the user may open, with their role there: the project switcher."""

    @property
    def project(self) -> str:
        return self.access.project.name

    @property
    def project_id(self) -> str:
        return self.access.project.id

    @property
    def role(self) -> str:
        return self.access.role

    @property
    def user(self) -> str:
        return self.principal.name

    @property
    def can_edit(self) -> bool:
        return RANK[self.role] >= RANK["editor"]

    @property
    def csrf(self) -> str:
        return self.session.csrf

    def url(self, *parts: Any) -> str:
        """`/ui/p/PROJECT/part/part`, every part quoted."""
        tail = "/".join(quote(str(p), safe="") for p in parts)
        return f"{PREFIX}/p/{quote(self.project, safe='')}/{tail}".rstrip("/")


def _projects(store: Store, principal: Principal) -> list[tuple[str, str]]:
    every = store.projects.list_projects()
    if principal.user.is_admin:
        return [(p.name, "owner") for p in every]
    roles = store.auth.projects_of(principal.user.id)
    return [(p.name, roles[p.id]) for p in every if p.id in roles]


def seat(project: str, request: Request) -> Seat:
    """The caller's seat in `project` (a page's dependency): LoginNeeded without a
    session, 404 outside the project."""
    return seat_of(project, request, "viewer")


def seat_of(project: str, request: Request, role: str) -> Seat:
    """The caller's seat in `project`: LoginNeeded without a session, 404 outside the
    project, 403 below `role`."""
    store = store_of(request)
    session, principal = sessions_of(request).find(store, request.cookies.get(COOKIE))
    access = need(role)(project, request, principal)
    return Seat(session, principal, access, store, _projects(store, principal))


def acting(project: str, request: Request, csrf: str, role: str = "editor") -> Seat:
    """The seat of a form that changes something: the session's CSRF token and `role`."""
    found = seat_of(project, request, "viewer")
    check_csrf(found.session, csrf)
    return seat_of(project, request, role) if role != "viewer" else found


def show(request: Request, where: Seat, template: str, **context: Any) -> HTMLResponse:
    return page(request, template, seat=where, flash=where.session.take_flash(), **context)


def back(where: Seat, url: str, kind: str = "", text: str = "") -> RedirectResponse:
    """After a form: say how it went on the next page."""
    if text:
        where.session.say(kind, text)
    return RedirectResponse(url, status_code=303)
