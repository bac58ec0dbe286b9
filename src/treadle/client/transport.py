"""The HTTP side of the client: one httpx connection pool, the token, the project the
calls address, and the server's refusals turned back into treadle's own errors."""

from __future__ import annotations

import copy
import hashlib
import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, cast
from urllib.parse import quote, urlsplit

import httpx

from treadle.client.decode import decode
from treadle.config import load_settings
from treadle.errors import (
    AccessError,
    ConfigError,
    ConflictError,
    CorruptArtifactError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    StoreUnavailableError,
    TreadleError,
)

API = "/api/v1"
T = TypeVar("T", bound="Transport")
R = TypeVar("R")


def unreachable(url: str, exc: Exception) -> StoreUnavailableError:
    return StoreUnavailableError(
        f"cannot reach the treadle server at {url}: {exc}",
        "check TREADLE_URL (or --url) and that `treadle up` is running there",
    )


def raise_for(response: httpx.Response, *, token: bool = True) -> None:
    """A refusal as the treadle error of its status, with the server's message and hint
    (`token`: whether the request carried one)."""
    if response.is_success:
        return
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        message, hint = body["error"], body.get("hint") or None
    elif status == 404:  # no such route: an older server, or not a treadle server at all
        message = f"{response.request.method} {response.request.url.path} is not found"
        where = response.request.url
        hint = f"is {where.scheme}://{where.netloc.decode()} a treadle server of this version?"
    else:
        detail = body.get("detail") if isinstance(body, dict) else response.text[:200]
        message, hint = f"the server answered {status}: {detail or response.reason_phrase}", None
    if status == 401:
        if not token:
            raise AccessError(
                f"{message}, and TREADLE_TOKEN is not set",
                "set TREADLE_TOKEN to a token of this server; `treadle up` prints the first one",
            )
        raise AccessError(message)
    if status == 403:
        raise PermissionDeniedError(message)
    if status == 404:
        raise NotFoundError(message, hint)
    if status == 409:
        raise ConflictError(message, hint)
    if status in (400, 413, 415, 416, 422):
        raise InvalidInputError(message, hint)
    if status in (502, 503, 504):
        raise StoreUnavailableError(message, hint)
    raise TreadleError(message, hint)


class Transport:
    """The connection to one treadle server, addressing one project.

    `url` and `token` default to TREADLE_URL and TREADLE_TOKEN, `project` to
    TREADLE_PROJECT. `verify` is httpx's (an SSLContext for a private CA); `trust_env`
    False ignores proxy settings of the environment. `for_project` gives a client for
    another project over the same connections.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        project: str | None = None,
        timeout: float = 30.0,
        verify: ssl.SSLContext | bool = True,
        trust_env: bool = True,
    ) -> None:
        if url is None or token is None or project is None:
            settings = load_settings()
            url = url or settings.url
            token = token or settings.token
            project = project or settings.project
        if not url:
            raise ConfigError("no treadle server to talk to", "pass its URL or set TREADLE_URL")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"{url!r} is not a server address", "write it like http://127.0.0.1:8080"
            )
        self.url = url.rstrip("/")
        self.project = project
        self._has_token = bool(token)
        headers = {"user-agent": "treadle-client"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.url + API,
            timeout=timeout,
            headers=headers,
            verify=verify,
            trust_env=trust_env,
        )

    def __repr__(self) -> str:  # never the token
        return f"{type(self).__name__}({self.url!r}, project={self.project!r})"

    def for_project(self: T, name: str) -> T:
        """The same client (and connections) addressing project `name`."""
        other = copy.copy(self)
        other.project = name
        return other

    def close(self) -> None:
        self._http.close()

    def __enter__(self: T) -> T:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- requests -------------------------------------------------------------------------

    def _in_project(self, path: str = "") -> str:
        return f"/projects/{segment(self.project)}{path}"

    def _run(self, run_id: str, path: str = "") -> str:
        return self._in_project(f"/runs/{segment(run_id)}{path}")

    def _step(self, step_run_id: str, path: str = "") -> str:
        return self._in_project(f"/step-runs/{segment(step_run_id)}{path}")

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(
                method, path, params=query, json=json, headers=headers, content=content
            )
        except httpx.TransportError as exc:
            raise unreachable(self.url, exc) from exc
        raise_for(response, token=self._has_token)
        return response

    def _call(
        self,
        tp: type[R],
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> R:
        response = self._send(
            method, path, params=params, json=json, content=content, headers=headers
        )
        try:
            data = response.json()
        except ValueError:
            raise TreadleError(
                f"{self.url} answered {method} {path} with something other than JSON",
                f"is {self.url} a treadle server?",
            ) from None
        return cast(R, decode(tp, data))

    def _get(self, tp: type[R], path: str, **params: Any) -> R:
        return self._call(tp, "GET", path, params=params)

    def _bytes(
        self, path: str, start: int | None = None, end: int | None = None, sha: str | None = None
    ) -> bytes:
        """A download; `start`/`end` (inclusive, like HTTP) ask for a slice. A whole
        download is checked against `sha` or the server's x-sha256 header."""
        headers = None
        if start is not None or end is not None:
            headers = {"range": f"bytes={start or 0}-{'' if end is None else end}"}
        response = self._send("GET", path, headers=headers)
        data = response.content
        if headers is None:
            _check(data, sha or response.headers.get("x-sha256"), path)
        elif response.status_code == 200:  # the server sent it all: cut the slice here
            data = data[start or 0 : None if end is None else end + 1]
        return data

    def _download(self, path: str, target: Path, sha: str | None = None) -> Path:
        """Stream a download into `target` (through a temporary file beside it), checked
        against `sha` or the server's x-sha256 header."""
        target = Path(target)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
        digest = hashlib.sha256()
        try:
            with self._http.stream("GET", path) as response:
                if not response.is_success:
                    response.read()
                    raise_for(response, token=self._has_token)
                expected = sha or response.headers.get("x-sha256")
                with tmp.open("wb") as out:
                    for chunk in response.iter_bytes(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
            if expected and digest.hexdigest() != expected:
                raise CorruptArtifactError(
                    f"the download of {path} hashes to {digest.hexdigest()[:12]}, "
                    f"not {expected[:12]}",
                    "try again; if it persists, the object is damaged on the server",
                )
            os.replace(tmp, target)
        except httpx.TransportError as exc:
            raise unreachable(self.url, exc) from exc
        finally:
            tmp.unlink(missing_ok=True)
        return target


def segment(value: str) -> str:
    """A name as one path segment."""
    return quote(value, safe="")


def _check(data: bytes, sha: str | None, what: str) -> None:
    if sha and hashlib.sha256(data).hexdigest() != sha:
        raise CorruptArtifactError(
            f"the download of {what} does not match its sha256 {sha[:12]}",
            "try again; if it persists, the object is damaged on the server",
        )
