"""Every operation of the live OpenAPI description, called by every kind of caller.

The route list is read from /openapi.json at test time, so a route added without an
access check fails here without this file changing. Each operation is called with real
alpha values in its path (and a minimal valid body) as anonymous, beta-owner, viewer,
editor, owner and admin; the role each route needs is derived from the answers and must
be ordered (what a viewer may do, an editor and an owner may too).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from api_support import (
    ADMIN,
    ANONYMOUS,
    API,
    BACKENDS,
    BETA_OWNER,
    DEPLOYMENT,
    EDITOR,
    MEMBER_ROLES,
    MODEL,
    OWNER,
    PUBLIC,
    RANK,
    ROLES,
    SEED_POLICY,
    VIEWER,
    Operation,
    Platform,
    error_of,
    fetch_spec,
    noun_of,
    operations,
    prepare,
    send,
    started_platform,
)

pytestmark = pytest.mark.slow

# only a server admin may manage users or read the server-wide audit log
ADMIN_ONLY_PREFIXES = (f"{API}/users", f"{API}/audit")
ADMIN_ONLY = {("POST", f"{API}/projects")}
# routes a signature lets in instead of a token (test_webhooks.py signs them)
SIGNED = frozenset({f"{API}/hooks/{{trigger_id}}"})
# what the routes known today need; a route missing from the spec is not asserted here
KNOWN_REQUIRED = {
    ("GET", f"{API}/projects/{{project}}"): VIEWER,
    ("GET", f"{API}/projects/{{project}}/runs"): VIEWER,
    ("GET", f"{API}/projects/{{project}}/artifacts/{{artifact_id}}/content"): VIEWER,
    ("POST", f"{API}/projects/{{project}}/runs/{{run_id}}/metrics"): EDITOR,
    ("GET", f"{API}/projects/{{project}}/audit"): OWNER,
    ("PUT", f"{API}/projects/{{project}}/members/{{user}}"): OWNER,
    ("DELETE", f"{API}/projects/{{project}}/members/{{user}}"): OWNER,
    ("POST", f"{API}/projects/{{project}}/external/runs"): EDITOR,
    ("POST", f"{API}/projects/{{project}}/external/objects"): EDITOR,
    ("POST", f"{API}/projects/{{project}}/external/runs/{{run_id}}/steps"): EDITOR,
    ("POST", f"{API}/projects/{{project}}/external/runs/{{run_id}}/finish"): EDITOR,
}
# body fields whose minimal value names nothing real, by route: a fresh string is no
# model reference, and the route would refuse it after the access check
BODY_VALUES = {
    ("PUT", f"{API}/projects/{{project}}/deployments/{{name}}"): {"ref": f"{MODEL}@champion"},
    ("POST", f"{API}/projects/{{project}}/monitors"): {"deployment": DEPLOYMENT},
    ("POST", f"{API}/projects/{{project}}/policies"): {"spec": SEED_POLICY, "replace": True},
}
# nouns whose seeded value belongs to alpha; a caller outside alpha must not reach them
ALPHA_DATA = frozenset(
    {
        "run",
        "artifact",
        "step_run",
        "node",
        "experiment",
        "experiment_id",
        "pipeline_version",
        "sha",
        "model",
        "model_id",
        "version",
        "version_id",
        "alias",
        "deployment",
        "deployment_id",
        "revision",
        "pipeline",
        "schedule",
        "trigger",
        "trigger_id",
        "event",
        "monitor",
        "policy",
        "policy_run",
    }
)


@pytest.fixture(scope="module", params=BACKENDS)
def platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    with started_platform(request, tmp_path_factory, "roles") as p:
        yield p


@dataclasses.dataclass(frozen=True)
class Answer:
    role: str
    url: str
    status: int
    text: str
    note: str
    message: str | None
    """The `error` (or `detail`) of a JSON answer."""

    @property
    def allowed(self) -> bool:
        """The access check let the caller through: a 409 or a 422 comes after it, since
        the route's dependency on `need(role)` runs before its own checks."""
        return self.status < 500 and self.status not in (401, 403, 404)


Matrix = dict[Operation, dict[str, Answer]]


def _order(op: Operation) -> tuple[int, int, str]:
    # reads first, then writes, then deletes (deepest first, so an alias goes before its
    # model): no write may remove what a later read needs
    if op.is_read:
        return (0, 0, op.label)
    if op.method != "DELETE":
        return (1, 0, op.label)
    return (2, -op.path.count("/"), op.label)


def walk(p: Platform, spec: dict[str, Any]) -> Matrix:
    matrix: Matrix = {}
    for op in sorted(operations(spec), key=_order):
        matrix[op] = {}
        for role in ROLES:
            request = prepare(p, op, role, spec)
            real = BODY_VALUES.get((op.method, op.path))
            if real is not None:
                request = dataclasses.replace(request, json_body={**request.json_body, **real})
            response = send(p, role, request)
            matrix[op][role] = Answer(
                role,
                request.url,
                response.status_code,
                response.text,
                request.note,
                message_of(response),
            )
    return matrix


def message_of(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    message = (body.get("error") or body.get("detail")) if isinstance(body, dict) else None
    return message if isinstance(message, str) and message else None


def scoped(op: Operation) -> bool:
    """Access depends on alpha: the route is under /projects/{project}, or its path names
    alpha's data some other way."""
    return op.in_project or any(noun_of(op, q) in ALPHA_DATA for q in op.path_params)


def admin_only(op: Operation) -> bool:
    return op.path.startswith(ADMIN_ONLY_PREFIXES) or (op.method, op.path) in ADMIN_ONLY


def consumed(op: Operation, answers: dict[str, Answer], role: str) -> bool:
    """A DELETE whose very target an earlier caller already removed: its 404 says so."""
    mine = answers[role]
    if op.method != "DELETE" or mine.status != 404:
        return False
    earlier = ROLES[: ROLES.index(role)]
    return any(answers[r].allowed and answers[r].url == mine.url for r in earlier)


def judge(matrix: Matrix, alpha_ids: set[str]) -> tuple[list[str], dict[str, str]]:
    """(violations as `METHOD path role status: why`, the role each route needs)."""
    bad: list[str] = []
    needs: dict[str, str] = {}

    def flag(op: Operation, role: str, why: str) -> None:
        a = matrix[op][role]
        note = f" [{a.note}]" if a.note else ""
        bad.append(f"{op.label} as {role} -> {a.status}: {why}{note} | {a.text[:160]}")

    for op, answers in matrix.items():
        for role, a in answers.items():
            if a.status >= 500:
                flag(op, role, "server error")
        if op.path in PUBLIC:
            for role in ROLES:
                if answers[role].status != 200:
                    flag(op, role, "a public route must answer anyone")
            needs[op.label] = "public"
            continue
        if op.path in SIGNED:
            # a signature, not a token, lets a webhook in: without one everyone gets 401
            for role in ROLES:
                if answers[role].status != 401:
                    flag(op, role, "an unsigned delivery must be 401, token or not")
            needs[op.label] = "signed"
            continue
        if answers[ANONYMOUS].status != 401:
            flag(op, ANONYMOUS, "no token must be 401")
        # nothing of alpha may reach someone outside it, not even inside an error
        beta = answers[BETA_OWNER]
        leaked = sorted(i for i in alpha_ids if i in beta.text and i not in beta.url)
        if leaked:
            flag(op, BETA_OWNER, f"alpha ids in the answer: {leaked}")
        for role in (OWNER, ADMIN) if scoped(op) else (ADMIN,):
            a = answers[role]
            if not a.allowed and not consumed(op, answers, role):
                flag(op, role, "must be allowed")
            elif a.status >= 400 and a.status != 409 and not consumed(op, answers, role):
                # the walk sent something the route refused on its merits: the access
                # check passed, but the call proved less than a success would (a 409
                # is the state a lower role's write left, e.g. nothing left to roll back)
                flag(op, role, "the walk's request was refused; fill it with real values")
        if scoped(op):
            if beta.status != 404:
                flag(op, BETA_OWNER, "alpha must not exist for a non-member (404)")
            if op.is_read and answers[VIEWER].status in (401, 404):
                flag(op, VIEWER, "a member must see alpha exists")
            if not op.is_read and answers[VIEWER].status != 403:
                flag(op, VIEWER, "a viewer may not write (403)")
            allowed = [r for r in MEMBER_ROLES if answers[r].allowed or consumed(op, answers, r)]
            need = min(allowed, key=RANK.__getitem__) if allowed else "nobody"
            needs[op.label] = need
            for role in MEMBER_ROLES:
                a = answers[role]
                if need != "nobody" and RANK[role] >= RANK[need]:
                    if not (a.allowed or consumed(op, answers, role)):
                        flag(op, role, f"needs {need}, so {role} must be allowed too")
                elif a.status != 403:
                    flag(op, role, f"needs {need}: a member below it gets 403")
        else:
            others = (VIEWER, EDITOR, OWNER, BETA_OWNER)
            statuses = {r: answers[r].status for r in others}
            if len({answers[r].allowed for r in others}) != 1:
                flag(op, VIEWER, f"project roles decide a route outside projects: {statuses}")
            if admin_only(op):
                for role in others:
                    if answers[role].status != 403:
                        flag(op, role, "admin-only: a non-admin gets 403")
            needs[op.label] = "admin" if all(answers[r].status == 403 for r in others) else "any"
        for role, a in answers.items():
            if a.status in (401, 403, 404) and a.message is None:
                flag(op, role, "a refusal without a JSON error message")
    return bad, needs


def table(needs: dict[str, str]) -> str:
    return "\n".join(f"  {need:>7}  {label}" for label, need in sorted(needs.items()))


def test_the_matrix_judge_catches_a_route_without_a_check() -> None:
    """The judge itself: a route answering 200 to everyone is reported for anonymous,
    beta-owner and the viewer writing."""
    op = Operation("POST", f"{API}/projects/{{project}}/unguarded", {})
    answers = {r: Answer(r, "/x", 200, "{}", "", None) for r in ROLES}
    bad, _ = judge({op: answers}, set())
    roles = sorted({line.split(" as ")[1].split(" ")[0] for line in bad})
    assert roles == sorted([ANONYMOUS, BETA_OWNER, VIEWER]), bad
    leaky = {r: Answer(r, "/x", 404, '{"error": "no run abc123"}', "", "no run") for r in ROLES}
    leaky[ANONYMOUS] = Answer(ANONYMOUS, "/x", 401, '{"error": "token"}', "", "token")
    bad, _ = judge({Operation("GET", f"{API}/projects/{{project}}/x", {}): leaky}, {"abc123"})
    assert any("alpha ids in the answer" in line for line in bad), bad


@pytest.mark.parametrize("path", sorted(PUBLIC))
def test_only_health_and_the_api_description_answer_without_a_token(
    platform: Platform, path: str
) -> None:
    response = platform.call(ANONYMOUS, "GET", path)
    if path == "/docs/oauth2-redirect" and response.status_code == 404:
        pytest.skip("no OAuth2 redirect page on this server")
    assert response.status_code == 200, response.text[:300]


def test_head_requests_need_a_token_too(platform: Platform) -> None:
    spec = fetch_spec(platform)
    wrong = []
    for op in operations(spec):
        if op.method != "GET" or op.path in PUBLIC:
            continue
        request = prepare(platform, op, ANONYMOUS, spec)
        status = platform.call(ANONYMOUS, "HEAD", request.url).status_code
        if status not in (401, 405):
            wrong.append(f"HEAD {op.path}: {status}")
    assert not wrong, wrong


def test_a_non_member_does_not_see_alpha_listed(platform: Platform) -> None:
    def names(role: str) -> set[str]:
        return {p["name"] for p in platform.ok(role, "GET", f"{API}/projects")}

    assert "alpha" not in names(BETA_OWNER)
    assert names(BETA_OWNER) == {"beta"}
    for role in (VIEWER, EDITOR, OWNER):
        assert names(role) == {"alpha"}, role
    assert {"alpha", "beta"} <= names(ADMIN)
    me = platform.ok(BETA_OWNER, "GET", f"{API}/me")
    assert me["projects"] == {"beta": "owner"}
    assert platform.ok(VIEWER, "GET", f"{API}/me")["projects"] == {"alpha": "viewer"}


def test_a_member_refused_by_role_is_told_which_role_is_needed(platform: Platform) -> None:
    response = platform.call(VIEWER, "GET", f"{API}/projects/alpha/audit")
    assert response.status_code == 403
    message = error_of(response)
    assert "owner" in message and "viewer" in message, message
    response = platform.call(EDITOR, "GET", f"{API}/users")
    assert response.status_code == 403
    assert "admin" in error_of(response)


# last: its writes and deletes move aliases and remove members the tests above read
def test_the_role_matrix_holds_for_every_route_in_the_spec(platform: Platform) -> None:
    spec = fetch_spec(platform)
    ops = operations(spec)
    # the walk is only as good as the spec: it must list the routes we know of
    labels = {op.label for op in ops}
    for known in (f"GET {API}/projects/{{project}}/runs/{{run_id}}", f"GET {API}/users"):
        assert known in labels, f"{known} missing from /openapi.json"
    matrix = walk(platform, spec)
    bad, needs = judge(matrix, platform.alpha_ids)
    print(f"\nroles each route needs ({platform.backend}):\n{table(needs)}")
    assert not bad, f"{len(bad)} answers break the role rules:\n" + "\n".join(bad)
    for (method, path), role in KNOWN_REQUIRED.items():
        label = f"{method} {path}"
        if label in needs:
            assert needs[label] == role, f"{label} needs {needs[label]}, expected {role}"
    # every scoped read is open to viewers except the owners' audit log
    for op in ops:
        if scoped(op) and op.is_read and not op.path.endswith("/audit"):
            assert needs[op.label] == VIEWER, f"{op.label} needs {needs[op.label]}"
