"""What the platform server must refuse, over real HTTP to a real `treadle up`: bad,
expired, revoked and disabled tokens; another project's ids; path traversal in every
path parameter and URI-like field; bodies that are too big, not JSON, or sent by a page
on another origin. Every refusal is a 4xx with a JSON error, and writes nothing: the row
count of every table and every file outside the home are compared before and after.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from api_support import (
    ADMIN,
    ANONYMOUS,
    API,
    BACKENDS,
    BETA_OWNER,
    EDITOR,
    FOREIGN_MARKERS,
    HOSTILE,
    OWNER,
    VIEWER,
    Operation,
    Platform,
    database_url,
    error_of,
    fetch_spec,
    minimal,
    noun_of,
    operations,
    prepare,
    raw_request,
    seed,
    start_server,
    started_platform,
)

pytestmark = pytest.mark.slow

MAX_BODY = 16 * 1024 * 1024


@pytest.fixture(scope="module", params=BACKENDS)
def platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    with started_platform(request, tmp_path_factory, "security") as p:
        yield p


class Unchanged:
    """Asserts on exit that no table gained or lost a row and no file outside the home
    was created, changed or touched."""

    def __init__(self, p: Platform) -> None:
        self.p = p

    def __enter__(self) -> Unchanged:
        self.counts = self.p.counts()
        self.files = self.p.outside_snapshot()
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            return
        after = self.p.counts()
        changed = {t: (self.counts.get(t), n) for t, n in after.items() if self.counts.get(t) != n}
        assert not changed, f"rows written by refused requests (before, after): {changed}"
        assert self.p.outside_snapshot() == self.files, "a file outside the home changed"


def assert_refused(response: httpx.Response, status: int, *fragments: str) -> str:
    assert response.status_code == status, f"{response.status_code}: {response.text[:300]}"
    message = error_of(response)
    for fragment in fragments:
        assert fragment in message, message
    return message


def user_with_token(p: Platform) -> tuple[str, str, str]:
    """(name, token id, secret) of a fresh viewer of alpha."""
    name = p.scratch_user()
    token_id, secret = p.token_for(name)
    return name, token_id, secret


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


# -- tokens -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(None, id="none"),
        pytest.param("", id="empty"),
        pytest.param("Bearer", id="scheme-only"),
        pytest.param("Bearer ", id="scheme-and-space"),
        pytest.param("Basic dXNlcjpwYXNz", id="basic"),
        pytest.param("Token {secret}", id="other-scheme"),
        pytest.param("{secret}", id="no-scheme"),
        pytest.param("Bearer {secret_no_prefix}", id="no-trd-prefix"),
        pytest.param("Bearer trd_", id="prefix-only"),
        pytest.param("Bearer trd_{random}", id="wrong-token"),
        pytest.param("Bearer {secret}x", id="one-char-more"),
        pytest.param("Bearer {secret_short}", id="one-char-less"),
        pytest.param("Bearer {secret} {secret}", id="twice"),
        pytest.param("Bearer {upper}", id="other-case"),
    ],
)
def test_a_missing_wrong_or_malformed_token_is_401(platform: Platform, header: str | None) -> None:
    secret = platform.tokens[VIEWER]
    headers = {}
    if header is not None:
        headers["Authorization"] = header.format(
            secret=secret,
            secret_no_prefix=secret.removeprefix("trd_"),
            secret_short=secret[:-1],
            random=uuid.uuid4().hex,
            upper=secret.upper(),
        )
    with Unchanged(platform):
        # sent as is: an HTTP client would refuse some of these headers itself
        for path in (f"{API}/me", f"{API}/projects/alpha/runs", f"{API}/tokens"):
            got = raw_request(platform, "GET", path, headers=headers)
            assert got.status == 401, f"{path}: {got.status} {got.text[:200]}"
            assert "token" in json.loads(got.body)["error"], got.text
        got = raw_request(
            platform,
            "POST",
            f"{API}/tokens",
            headers={**headers, "Content-Type": "application/json"},
            body=b'{"name": "x"}',
        )
        assert got.status == 401, got.text


def test_a_disabled_users_token_is_401(platform: Platform) -> None:
    name, _, secret = user_with_token(platform)
    assert platform.call(ANONYMOUS, "GET", f"{API}/me", headers=bearer(secret)).status_code == 200
    # no route disables a user yet: the store does, as an admin tool would
    platform.execute("UPDATE users SET disabled = :d WHERE name = :n", d=True, n=name)
    with Unchanged(platform):
        for path in (f"{API}/me", f"{API}/projects/alpha/runs"):
            response = platform.call(ANONYMOUS, "GET", path, headers=bearer(secret))
            assert_refused(response, 401, "disabled", name)
        response = platform.call(
            ANONYMOUS, "POST", f"{API}/tokens", json={"name": "x"}, headers=bearer(secret)
        )
        assert_refused(response, 401, "disabled")


def test_an_expired_token_is_401(platform: Platform) -> None:
    name = platform.scratch_user()
    # a token living under a tenth of a second, issued through the API
    _, short = platform.token_for(name, expires_in_days=1e-6)
    # and one whose expiry is moved into the past in the store
    long_id, long = platform.token_for(name, expires_in_days=30)
    assert platform.call(ANONYMOUS, "GET", f"{API}/me", headers=bearer(long)).status_code == 200
    platform.execute(
        "UPDATE tokens SET expires_at = :at WHERE id = :id", at=time.time() - 60, id=long_id
    )
    time.sleep(0.2)
    with Unchanged(platform):
        for secret in (short, long):
            response = platform.call(
                ANONYMOUS, "GET", f"{API}/projects/alpha", headers=bearer(secret)
            )
            assert_refused(response, 401, "expired")


@pytest.mark.parametrize("days", [0, -1, 1e9, "soon"])
def test_a_token_lifetime_out_of_range_is_refused(platform: Platform, days: Any) -> None:
    with Unchanged(platform):
        response = platform.call(
            VIEWER, "POST", f"{API}/tokens", json={"name": "bad", "expires_in_days": days}
        )
        assert_refused(response, 422, "expires_in_days")


def test_a_revoked_token_is_401_at_once(platform: Platform) -> None:
    _, _, main = user_with_token(platform)
    issued = platform.call(
        ANONYMOUS, "POST", f"{API}/tokens", json={"name": "to-revoke"}, headers=bearer(main)
    )
    assert issued.status_code == 201, issued.text
    spare_id, spare = issued.json()["id"], issued.json()["token"]
    assert platform.call(ANONYMOUS, "GET", f"{API}/me", headers=bearer(spare)).status_code == 200
    revoked = platform.call(ANONYMOUS, "DELETE", f"{API}/tokens/{spare_id}", headers=bearer(main))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    with Unchanged(platform):
        response = platform.call(ANONYMOUS, "GET", f"{API}/me", headers=bearer(spare))
        assert_refused(response, 401, "revoked")
        # the revoked token cannot bring itself back
        again = platform.call(
            ANONYMOUS, "POST", f"{API}/tokens", json={"name": "x"}, headers=bearer(spare)
        )
        assert_refused(again, 401)
    # the user's other token still works
    assert platform.call(ANONYMOUS, "GET", f"{API}/me", headers=bearer(main)).status_code == 200


def test_nobody_revokes_or_lists_someone_elses_tokens(platform: Platform) -> None:
    owner_token = platform.token_ids[OWNER]
    with Unchanged(platform):
        for role in (VIEWER, EDITOR, BETA_OWNER):
            response = platform.call(role, "DELETE", f"{API}/tokens/{owner_token}")
            missing = platform.call(role, "DELETE", f"{API}/tokens/{uuid.uuid4().hex}")
            assert_refused(response, 404)
            assert response.json().keys() == missing.json().keys()
        for role in (VIEWER, EDITOR, OWNER, BETA_OWNER):
            listed = platform.ok(role, "GET", f"{API}/tokens")
            assert [t["id"] for t in listed] == [platform.token_ids[role]], role
    assert platform.call(OWNER, "GET", f"{API}/me").status_code == 200


def test_a_secret_is_shown_once_and_only_its_sha256_is_stored(platform: Platform) -> None:
    _, _, main = user_with_token(platform)
    issued = platform.call(
        ANONYMOUS, "POST", f"{API}/tokens", json={"name": "mine"}, headers=bearer(main)
    )
    assert issued.status_code == 201
    secret, token_id = issued.json()["token"], issued.json()["id"]
    assert secret.startswith("trd_") and len(secret) >= 40
    shown = [main, secret, *platform.tokens.values()]
    for role in (ANONYMOUS, ADMIN):
        headers = bearer(main) if role == ANONYMOUS else {}
        listed = platform.call(role, "GET", f"{API}/tokens", headers=headers)
        assert listed.status_code == 200
        for s in shown:
            assert s not in listed.text, "GET /tokens shows a secret"
        for record in listed.json():
            assert not {"token", "secret", "hash"} & set(record), record
    rows = platform.rows("SELECT * FROM tokens WHERE id = :id", id=token_id)
    assert len(rows) == 1
    assert rows[0]["hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert rows[0]["prefix"] == secret[:12]
    # no column of any table holds a secret (the audit log included)
    for table in platform.counts():
        for row in platform.rows(f'SELECT * FROM "{table}"'):
            text = repr(row)
            for s in shown:
                assert s not in text, f"a token secret is stored in {table}"
    # nor did the server print any secret but the admin's, once, on first start
    printed = platform.server.stderr()
    for s in shown:
        if s != platform.tokens[ADMIN]:
            assert s not in printed


# -- isolation between projects ---------------------------------------------------------

# path parameters whose seeded value is an id (or a name) that only alpha has
ALPHA_ONLY = frozenset(
    {
        "run",
        "artifact",
        "step_run",
        "experiment_id",
        "pipeline_version",
        "sha",
        "model_id",
        "version_id",
        "deployment",
        "deployment_id",
    }
)


def _shape(response: httpx.Response) -> tuple[int, str, frozenset[str]]:
    body = response.json()
    return response.status_code, response.headers["content-type"], frozenset(body)


def test_alphas_ids_under_beta_are_404_like_ids_that_do_not_exist(platform: Platform) -> None:
    """Every scoped operation whose path names an alpha-only object, asked under beta by
    beta's owner (and by the admin, who sees both): 404 with the same status, content type
    and error fields as a made-up id, and no alpha id in the answer."""
    spec = fetch_spec(platform)
    checked, wrong = 0, []
    with Unchanged(platform):
        for op in operations(spec):
            nouns = {q: noun_of(op, q) for q in op.path_params}
            foreign = [q for q, n in nouns.items() if n in ALPHA_ONLY]
            if not op.in_project or not foreign or not op.is_read:
                continue
            request = prepare(platform, op, BETA_OWNER, spec)
            for role in (BETA_OWNER, ADMIN):
                url = request.url.replace("/projects/alpha", "/projects/beta", 1)
                made_up = url
                for q in foreign:
                    value = platform.values[nouns[q] or ""]
                    # a made-up value of the same form: hex ids stay hex of their length
                    fake = (
                        secrets.token_hex(32)[: len(value)]
                        if re.fullmatch("[0-9a-f]+", value)
                        else "nope"
                    )
                    made_up = made_up.replace(value, fake)
                got = platform.call(role, op.method, url, params=request.params)
                baseline = platform.call(role, op.method, made_up, params=request.params)
                checked += 1
                if got.status_code != 404 or _shape(got) != _shape(baseline):
                    wrong.append(f"{op.label} as {role}: {got.status_code} {got.text[:200]}")
                leaked = [i for i in platform.alpha_ids if i in got.text and i not in url]
                if leaked:
                    wrong.append(f"{op.label} as {role} leaks {leaked}")
    assert checked >= 10, "too few routes name alpha's objects: is the spec complete?"
    assert not wrong, "\n".join(wrong)


def test_a_guessed_project_is_404_like_a_missing_one(platform: Platform) -> None:
    with Unchanged(platform):
        for role, foreign in ((BETA_OWNER, "alpha"), (VIEWER, "beta"), (OWNER, "beta")):
            for tail in ("", "/runs", "/members", "/audit", "/experiments"):
                got = platform.call(role, "GET", f"{API}/projects/{foreign}{tail}")
                missing = platform.call(role, "GET", f"{API}/projects/no-such-project{tail}")
                assert got.status_code == missing.status_code == 404, (role, tail)
                assert _shape(got) == _shape(missing)
                assert error_of(got).replace(foreign, "?") == error_of(missing).replace(
                    "no-such-project", "?"
                )


def test_run_id_prefixes_do_not_reach_across_projects(platform: Platform) -> None:
    alpha_run = platform.seeded["alpha"]["runs"][0]
    with Unchanged(platform):
        for length in (4, 8, 16, 31):
            prefix = alpha_run[:length]
            got = platform.call(BETA_OWNER, "GET", f"{API}/projects/beta/runs/{prefix}")
            assert got.status_code == 404, got.text
            assert "ambiguous" not in got.text
            other = "f" * length if not alpha_run.startswith("f") else "e" * length
            missing = platform.call(BETA_OWNER, "GET", f"{API}/projects/beta/runs/{other}")
            assert _shape(got) == _shape(missing)


def test_a_listing_under_beta_shows_only_betas_objects(platform: Platform) -> None:
    beta = platform.seeded["beta"]
    runs = platform.ok(BETA_OWNER, "GET", f"{API}/projects/beta/runs", params={"limit": 1000})
    assert {r["id"] for r in runs} == set(beta["runs"])
    for run in runs:
        assert run["project_id"] == beta["project_id"]
    experiments = platform.ok(BETA_OWNER, "GET", f"{API}/projects/beta/experiments")
    assert [e["experiment"]["id"] for e in experiments] == [beta["experiment_id"]]
    members = platform.ok(BETA_OWNER, "GET", f"{API}/projects/beta/members")
    assert {m["user_name"] for m in members} == {BETA_OWNER}


def test_writes_to_alpha_from_outside_are_404_and_write_nothing(platform: Platform) -> None:
    run = platform.seeded["alpha"]["runs"][0]
    metrics = {"metrics": [{"key": "injected", "value": 1.0, "step": 0}]}
    with Unchanged(platform):
        for project in ("alpha", "beta"):
            response = platform.call(
                BETA_OWNER, "POST", f"{API}/projects/{project}/runs/{run}/metrics", json=metrics
            )
            assert_refused(response, 404)
        for user in (VIEWER, BETA_OWNER):
            response = platform.call(
                BETA_OWNER, "PUT", f"{API}/projects/alpha/members/{user}", json={"role": "owner"}
            )
            assert_refused(response, 404)
            response = platform.call(BETA_OWNER, "DELETE", f"{API}/projects/alpha/members/{user}")
            assert_refused(response, 404)
        # a member of alpha gets nothing of beta either
        beta_run = platform.seeded["beta"]["runs"][0]
        response = platform.call(
            OWNER, "POST", f"{API}/projects/beta/runs/{beta_run}/metrics", json=metrics
        )
        assert_refused(response, 404)


def test_the_step_cache_never_crosses_projects(platform: Platform) -> None:
    """Beta ran the very pipeline alpha ran (same cache keys): alpha's second run was
    answered from alpha's cache, beta's run computed every step itself."""
    alpha_first, alpha_second = platform.seeded["alpha"]["runs"]
    first = platform.ok(OWNER, "GET", f"{API}/projects/alpha/runs/{alpha_first}/steps")
    second = platform.ok(OWNER, "GET", f"{API}/projects/alpha/runs/{alpha_second}/steps")
    beta_run = platform.seeded["beta"]["runs"][0]
    beta = platform.ok(BETA_OWNER, "GET", f"{API}/projects/beta/runs/{beta_run}/steps")
    alpha_keys = {s["node"]: s["cache_key"] for s in first}
    assert {s["node"]: s["cache_key"] for s in beta} == alpha_keys, "the keys should match"
    first_ids = {s["id"] for s in first}
    assert second and all(s["cached_from"] in first_ids for s in second), second
    assert beta and all(s["cached_from"] is None for s in beta), beta
    crossed = platform.rows(
        "SELECT s.id FROM step_runs s JOIN step_runs c ON c.id = s.cached_from "
        "WHERE s.project_id <> c.project_id"
    )
    assert crossed == []


# -- traversal and hostile input --------------------------------------------------------

URI_LIKE = re.compile(r"uri|url|path|file|dir|location|source|href", re.IGNORECASE)


def _hostile_values(p: Platform) -> list[str]:
    sentinel = p.sentinel
    rel = Path("..") / ".." / sentinel.relative_to(p.root)
    return [*HOSTILE, str(sentinel), str(rel), f"file://{sentinel}"]


def _targets(value: str) -> list[str]:
    """The value as one encoded path segment, and as it is, for the router to see."""
    raw = value.replace("\\", "%5C").replace("\x00", "%00")
    return [quote(value, safe=""), raw]


def _foreign(text: str) -> list[str]:
    return [m for m in FOREIGN_MARKERS if m in text]


def test_hostile_path_parameters_are_4xx_and_touch_nothing(platform: Platform) -> None:
    spec = fetch_spec(platform)
    values = _hostile_values(platform)
    wrong: list[str] = []
    sent = 0
    with Unchanged(platform):
        for op in operations(spec):
            if not op.path_params:
                continue
            # admin: the caller every check lets furthest; real values elsewhere in the path
            request = prepare(platform, op, ADMIN, spec, consume=False)
            body = None if request.json_body is None else as_json(request.json_body)
            for param in op.path_params:
                for value in values:
                    for segment in _targets(value):
                        target = fill(op, request.url, param, segment)
                        if request.params:
                            target += "?" + "&".join(f"{k}={v}" for k, v in request.params.items())
                        headers = {"Authorization": f"Bearer {platform.tokens[ADMIN]}"}
                        if body is not None:
                            headers["Content-Type"] = "application/json"
                        got = raw_request(platform, op.method, target, headers=headers, body=body)
                        sent += 1
                        if got.status in (307, 308) and got.location:
                            # the router's trailing-slash redirect: it must stay on this
                            # server, and where it leads must refuse too
                            location = urlsplit(got.location)
                            if location.netloc != f"127.0.0.1:{platform.server.port}":
                                wrong.append(f"{target} redirects away: {got.location}")
                                continue
                            target = location.path + (
                                f"?{location.query}" if location.query else ""
                            )
                            got = raw_request(
                                platform, op.method, target, headers=headers, body=body
                            )
                        if not 400 <= got.status < 500 or _foreign(got.text):
                            wrong.append(f"{op.method} {target} -> {got.status} {got.text[:150]}")
    assert sent > 100
    assert not wrong, f"{len(wrong)} of {sent}:\n" + "\n".join(wrong[:40])


def as_json(value: Any) -> bytes:
    return json.dumps(value).encode()


def fill(op: Operation, url: str, param: str, segment: str) -> str:
    """`url` (the operation's path with real values) with `param`'s value replaced."""
    parts = op.path.split("/")
    real = url.split("/")
    index = parts.index("{" + param + "}")
    real[index] = segment
    return "/".join(real)


def test_a_nul_byte_in_a_path_parameter_is_4xx(
    platform: Platform, request: pytest.FixtureRequest
) -> None:
    """SQLite would store such text and PostgreSQL refuses it; either way a name or id
    with a NUL byte names nothing, and the caller is told so."""
    spec = fetch_spec(platform)
    headers = {"Authorization": f"Bearer {platform.tokens[ADMIN]}"}
    wrong: list[str] = []
    with Unchanged(platform):
        for op in operations(spec):
            req = prepare(platform, op, ADMIN, spec, consume=False)
            body = None if req.json_body is None else as_json(req.json_body)
            sent = {**headers, **({"Content-Type": "application/json"} if body else {})}
            for param in op.path_params:
                for value in ("%00", "a%00b"):
                    target = fill(op, req.url, param, value)
                    got = raw_request(platform, op.method, target, headers=sent, body=body)
                    if not 400 <= got.status < 500:
                        wrong.append(f"{op.method} {target} -> {got.status}")
    assert not wrong, f"{len(wrong)} answers:\n" + "\n".join(wrong[:40])


def test_hostile_query_values_never_5xx_nor_read_a_foreign_file(platform: Platform) -> None:
    spec = fetch_spec(platform)
    wrong, sent = [], 0
    with Unchanged(platform):
        for op in operations(spec):
            if not op.is_read:
                continue
            request = prepare(platform, op, ADMIN, spec)
            for q in op.parameters("query"):
                schema = q.get("schema", {})
                kinds = {s.get("type") for s in schema.get("anyOf", [schema])}
                if "string" not in kinds or "enum" in schema:
                    continue
                for value in _hostile_values(platform):
                    got = platform.call(
                        ADMIN, "GET", request.url, params={**request.params, q["name"]: value}
                    )
                    sent += 1
                    if got.status_code >= 500 or _foreign(got.text):
                        wrong.append(f"{op.label}?{q['name']}={value}: {got.status_code}")
    assert sent > 0
    assert not wrong, "\n".join(wrong)


def test_hostile_uri_fields_in_bodies_are_4xx(platform: Platform) -> None:
    """Body fields that name a path or URI (none may point outside the store); a route
    with such a field added later is picked up from the spec."""
    spec = fetch_spec(platform)
    wrong = []
    with Unchanged(platform):
        for op in operations(spec):
            schema = op.body_schema(spec)
            if op.is_read or schema is None:
                continue
            request = prepare(platform, op, ADMIN, spec, consume=False)
            for field in [f for f in schema.get("properties", {}) if URI_LIKE.search(f)]:
                for value in _hostile_values(platform):
                    body = {**(request.json_body or {}), field: value}
                    got = platform.call(ADMIN, op.method, request.url, json=body)
                    if not 400 <= got.status_code < 500 or _foreign(got.text):
                        wrong.append(f"{op.label} {field}={value}: {got.status_code}")
    assert not wrong, "\n".join(wrong)


# -- refusals before any route ----------------------------------------------------------


def _json_writes(p: Platform) -> list[tuple[Operation, str, bytes]]:
    """Every operation taking a JSON body: (operation, a real url, a valid JSON body)."""
    spec = fetch_spec(p)
    out = []
    for op in operations(spec):
        if op.is_read or op.body_schema(spec) is None:
            continue
        request = prepare(p, op, ADMIN, spec, consume=False)
        out.append((op, request.url, as_json(request.json_body)))
    assert out, "no operation takes a JSON body"
    return out


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        None,
    ],
)
def test_a_non_json_body_is_415_before_any_route(
    platform: Platform, content_type: str | None
) -> None:
    writes = _json_writes(platform)
    with Unchanged(platform):
        for op, url, body in writes:
            if content_type is not None and "form-urlencoded" in content_type:
                body = b"name=x&role=viewer"
            headers = {"Authorization": f"Bearer {platform.tokens[ADMIN]}"}
            if content_type is not None:
                headers["Content-Type"] = content_type
            got = raw_request(platform, op.method, url, headers=headers, body=body)
            assert got.status == 415, f"{op.label}: {got.status} {got.text[:200]}"
            assert "application/json" in got.text


@pytest.mark.parametrize(
    "origin",
    ["http://evil.example", "null", "http://127.0.0.1:1", "http://localhost.evil.example"],
)
def test_a_foreign_origin_is_403_on_every_route(platform: Platform, origin: str) -> None:
    spec = fetch_spec(platform)
    with Unchanged(platform):
        for op in operations(spec):
            request = prepare(platform, op, ADMIN, spec, consume=False)
            kwargs: dict[str, Any] = {"params": request.params, "headers": {"Origin": origin}}
            if request.json_body is not None:
                kwargs["json"] = request.json_body
            got = platform.call(ADMIN, op.method, request.url, **kwargs)
            assert_refused(got, 403, "refused")
        preflight = platform.call(
            ANONYMOUS,
            "OPTIONS",
            f"{API}/tokens",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 403
        assert "access-control-allow-origin" not in preflight.headers


def test_the_servers_own_origin_is_let_through(platform: Platform) -> None:
    got = platform.call(VIEWER, "GET", f"{API}/me", headers={"Origin": platform.url})
    assert got.status_code == 200, got.text


def test_a_body_over_the_limit_is_413_before_any_route(platform: Platform) -> None:
    writes = _json_writes(platform)
    headers = {
        "Authorization": f"Bearer {platform.tokens[ADMIN]}",
        "Content-Type": "application/json",
    }
    with Unchanged(platform):
        for op, url, _ in writes:
            # the length alone is enough to refuse: the body is never read
            claimed = {**headers, "Content-Length": str(MAX_BODY + 1)}
            got = raw_request(platform, op.method, url, headers=claimed, body=None)
            assert got.status == 413, f"{op.label}: {got.status} {got.text[:200]}"
        # and a real one, sent in full
        padded = b'{"name": "big", "pad": "' + b"a" * MAX_BODY + b'"}'
        got_full = platform.call(
            ADMIN,
            "POST",
            f"{API}/tokens",
            content=padded,
            headers={"Content-Type": "application/json"},
        )
        assert_refused(got_full, 413, str(MAX_BODY))


def test_a_chunked_body_over_the_limit_is_413(platform: Platform) -> None:
    padded = b'{"name": "chunked-big", "pad": "' + b"a" * (MAX_BODY + 1024) + b'"}'
    headers = {
        "Authorization": f"Bearer {platform.tokens[ADMIN]}",
        "Content-Type": "application/json",
    }
    with Unchanged(platform):
        got = raw_request(
            platform, "POST", f"{API}/tokens", headers=headers, body=padded, chunked=True
        )
        assert got.status == 413, f"{got.status} {got.text[:200]}"


def test_a_chunked_non_json_body_is_refused_and_writes_nothing(platform: Platform) -> None:
    headers = {"Authorization": f"Bearer {platform.tokens[ADMIN]}"}
    writes = _json_writes(platform)
    with Unchanged(platform):
        for op, url, body in writes:
            for kind in ("text/plain", "application/x-www-form-urlencoded", None):
                sent = {**headers, **({"Content-Type": kind} if kind else {})}
                got = raw_request(platform, op.method, url, headers=sent, body=body, chunked=True)
                assert 400 <= got.status < 500, f"{op.label} {kind}: {got.status}"


def test_a_chunked_text_plain_body_is_415(platform: Platform) -> None:
    headers = {
        "Authorization": f"Bearer {platform.tokens[ADMIN]}",
        "Content-Type": "text/plain",
    }
    got = raw_request(
        platform, "POST", f"{API}/tokens", headers=headers, body=b'{"name": "x"}', chunked=True
    )
    assert got.status == 415, f"{got.status} {got.text[:200]}"


def _integer_spots(value: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Where `value` (a JSON body) holds an integer."""
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        yield at
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _integer_spots(item, (*at, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _integer_spots(item, (*at, index))


def _with(value: Any, at: tuple[Any, ...], new: Any) -> Any:
    copy = json.loads(json.dumps(value))
    node = copy
    for key in at[:-1]:
        node = node[key]
    node[at[-1]] = new
    return copy


def test_an_integer_past_64_bits_is_4xx(platform: Platform) -> None:
    """Every integer the API takes (query, path, body, items of body arrays), set past
    what a database column holds."""
    spec = fetch_spec(platform)
    huge = (2**63, 10**30)
    wrong: list[str] = []
    checked = 0
    with Unchanged(platform):
        for op in operations(spec):
            req = prepare(platform, op, ADMIN, spec, consume=False)
            schema = op.body_schema(spec)
            body = (
                minimal(spec, schema, "body", platform.unique("int"), one_item=True)
                if schema is not None
                else None
            )
            cases: list[tuple[str, str, dict[str, Any], Any]] = []
            for q in op.parameters("query"):
                kinds = {s.get("type") for s in q.get("schema", {}).get("anyOf", [q["schema"]])}
                if "integer" in kinds:
                    for n in huge:
                        cases.append((f"?{q['name']}={n}", req.url, {q["name"]: n}, body))
            for param in op.path_params:
                declared = next(p for p in op.parameters("path") if p["name"] == param)
                if declared.get("schema", {}).get("type") == "integer":
                    for n in huge:
                        cases.append(
                            (f"{{{param}}}={n}", fill(op, req.url, param, str(n)), {}, body)
                        )
            for at in _integer_spots(body):
                for n in huge:
                    where = ".".join(map(str, at))
                    cases.append((f"body.{where}={n}", req.url, {}, _with(body, at, n)))
            for what, url, params, sent in cases:
                kwargs: dict[str, Any] = {"params": {**req.params, **params}}
                if sent is not None:
                    kwargs["json"] = sent
                got = platform.call(ADMIN, op.method, url, **kwargs)
                checked += 1
                if not 400 <= got.status_code < 500:
                    wrong.append(f"{op.label} {what} -> {got.status_code}")
    assert checked >= 10
    assert not wrong, "\n".join(wrong)


def _string_typed(schema: dict[str, Any]) -> bool:
    return "string" in {s.get("type") for s in schema.get("anyOf", [schema])}


def test_a_nul_byte_in_a_query_or_body_string_is_never_a_5xx(
    platform: Platform, request: pytest.FixtureRequest
) -> None:
    """Free text (a token's name, a filter) with a NUL byte: SQLite keeps it, which is
    fine; PostgreSQL refuses it, which must come back as a 4xx, not a crash. Runs late:
    where the text is accepted, the writes are real."""
    spec = fetch_spec(platform)
    wrong: list[str] = []
    for op in operations(spec):
        req = prepare(platform, op, ADMIN, spec, consume=True)
        if op.is_read:
            for q in op.parameters("query"):
                if _string_typed(q.get("schema", {})):
                    got = platform.call(
                        ADMIN, op.method, req.url, params={**req.params, q["name"]: "a\x00b"}
                    )
                    if got.status_code >= 500:
                        wrong.append(f"{op.label}?{q['name']}=a\\x00b -> {got.status_code}")
            continue
        for field, prop in ((op.body_schema(spec) or {}).get("properties") or {}).items():
            if _string_typed(dict(prop)):
                body = {**(req.json_body or {}), field: "a\x00b"}
                got = platform.call(ADMIN, op.method, req.url, json=body)
                if got.status_code >= 500:
                    wrong.append(f"{op.label} {field}=a\\x00b -> {got.status_code}")
    assert not wrong, f"{len(wrong)} answers:\n" + "\n".join(wrong)


# -- kill -9 ----------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def fresh_home(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, str | None]]:
    home = tmp_path / "home"
    with database_url(request, home) as url:
        yield home, (None if request.param == "sqlite" else url)


def test_kill_9_and_restart_keeps_the_admin_token_and_the_data(
    fresh_home: tuple[Path, str | None],
) -> None:
    home, db_url = fresh_home
    seeded = seed(home, db_url)
    logs = home.parent / "logs"
    first = start_server(home, db_url, logs)
    acknowledged: list[str] = []
    try:
        printed = first.printed_tokens()
        assert len(printed) == 1, first.stderr()
        admin = printed.pop()
        auth = bearer(admin)
        stop = threading.Event()

        def write() -> None:
            # tokens issued as fast as the server answers, until it dies mid-stream
            with httpx.Client(base_url=first.url, headers=auth, trust_env=False) as http:
                while not stop.is_set():
                    try:
                        r = http.post(f"{API}/tokens", json={"name": "load"}, timeout=5)
                    except httpx.TransportError:
                        return
                    if r.status_code == 201:
                        acknowledged.append(r.json()["id"])

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        deadline = time.monotonic() + 10
        while len(acknowledged) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert first.kill9() == -9
        stop.set()
        writer.join(10)
    finally:
        first.stop()
    assert len(acknowledged) >= 5, "the writer never got going"

    second = start_server(home, db_url, logs)
    try:
        assert second.printed_tokens() == set(), f"a second token was printed:\n{second.stderr()}"
        assert "created the admin user" not in second.stderr()
        with httpx.Client(base_url=second.url, headers=auth, trust_env=False) as http:
            me = http.get(f"{API}/me")
            assert me.status_code == 200 and me.json()["user"]["is_admin"], me.text
            users = [u for u in http.get(f"{API}/users").json() if u["is_admin"]]
            assert [u["name"] for u in users] == ["admin"]
            tokens = {t["id"] for t in http.get(f"{API}/tokens").json()}
            # every acknowledged write survived; at most the one in flight is extra
            assert set(acknowledged) <= tokens
            assert len(tokens) - len(acknowledged) in (1, 2), (len(tokens), len(acknowledged))
            runs = http.get(f"{API}/projects/alpha/runs").json()
            assert {r["id"] for r in runs} == set(seeded["alpha"]["runs"])
            assert {r["state"] for r in runs} == {"SUCCEEDED"}
            run = seeded["alpha"]["runs"][0]
            for artifact in http.get(f"{API}/projects/alpha/runs/{run}/artifacts").json():
                content = http.get(f"{API}/projects/alpha/artifacts/{artifact['id']}/content")
                assert content.status_code == 200
                assert hashlib.sha256(content.content).hexdigest() == artifact["sha256"]
            # and it takes writes again
            assert http.post(f"{API}/tokens", json={"name": "after"}).status_code == 201
    finally:
        second.stop()
