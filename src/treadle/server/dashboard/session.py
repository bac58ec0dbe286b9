"""Dashboard sessions: a token typed in once, a random session id in the cookie after.

The cookie holds only a random id (HttpOnly, SameSite=Strict, path /ui). What it stands
for lives in this process's memory: the sha256 of the token the user logged in with (not
the token), the user, and the session's CSRF secret. Every request looks the token up
again, so a revoked or expired token, or a disabled user, ends the session at once. A
restart of the server ends every session (log in again).
"""

from __future__ import annotations

import dataclasses
import hmac
import secrets
import threading
import time

from treadle.errors import TreadleError
from treadle.server.auth import (
    TOKEN_PREFIX,
    Principal,
    Unauthorized,
    hash_token,
    principal_of_hash,
)
from treadle.store import Store

COOKIE = "treadle_session"
IDLE_SECONDS = 12 * 3600
MAX_SESSIONS = 10_000


class LoginNeeded(TreadleError):
    """No session, or one that ended: the page sends the browser to the login form."""

    http_status = 401


class CsrfError(TreadleError):
    http_status = 403
    default_hint = "reload the page and try again"


@dataclasses.dataclass
class Session:
    id: str
    token_hash: str
    csrf: str
    seen: float
    flash: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    """Messages for the next page: (kind, text), kind `ok` or `error`."""

    def say(self, kind: str, text: str) -> None:
        self.flash.append((kind, text))

    def take_flash(self) -> list[tuple[str, str]]:
        out, self.flash = self.flash, []
        return out


def principal_of(store: Store, secret: str) -> Principal:
    """The user a token belongs to, if it is valid now (as the API checks a bearer token)."""
    secret = secret.strip()
    if not secret.startswith(TOKEN_PREFIX):
        raise Unauthorized("that is not a treadle token", "tokens start with trd_")
    return principal_of_hash(store, hash_token(secret))


class Sessions:
    """The server's live sessions, by id."""

    def __init__(self) -> None:
        self._by_id: dict[str, Session] = {}
        self._lock = threading.Lock()

    def open(self, store: Store, secret: str) -> tuple[Session, Principal]:
        principal = principal_of(store, secret)
        session = Session(
            secrets.token_urlsafe(32), hash_token(secret.strip()), secrets.token_urlsafe(32), 0
        )
        session.seen = time.time()
        with self._lock:
            self._expire(session.seen)
            self._by_id[session.id] = session
        return session, principal

    def find(self, store: Store, session_id: str | None) -> tuple[Session, Principal]:
        """The live session of a cookie and who it is, or LoginNeeded."""
        now = time.time()
        with self._lock:
            session = self._by_id.get(session_id or "")
            if session is None or now - session.seen > IDLE_SECONDS:
                self._by_id.pop(session_id or "", None)
                raise LoginNeeded("please log in")
            session.seen = now
        try:
            return session, principal_of_hash(store, session.token_hash)
        except Unauthorized as exc:
            self.close(session.id)
            raise LoginNeeded(exc.message, exc.hint) from None

    def close(self, session_id: str) -> None:
        with self._lock:
            self._by_id.pop(session_id, None)

    def _expire(self, now: float) -> None:
        stale = [k for k, s in self._by_id.items() if now - s.seen > IDLE_SECONDS]
        for key in stale:
            del self._by_id[key]
        while len(self._by_id) >= MAX_SESSIONS:  # the oldest go first
            del self._by_id[min(self._by_id, key=lambda k: self._by_id[k].seen)]


def check_csrf(session: Session, sent: str) -> None:
    if not hmac.compare_digest(session.csrf.encode(), (sent or "").encode()):
        raise CsrfError("the form's security token does not match this session")
