"""Schemathesis against a running `treadle up`, from the server's own /openapi.json: a
bounded, derandomized number of generated requests per operation, none of which may
get a 5xx (or, without a token, anything but a refusal).

Every operation is fuzzed two ways: valid inputs (with alpha's real ids in the path where
it has any, so the requests reach the code behind the lookups) and inputs that break the
schema; each request is also sent without a token.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from api_support import (
    ADMIN,
    ANONYMOUS,
    BACKENDS,
    PUBLIC,
    Operation,
    Platform,
    fetch_spec,
    noun_of,
    started_platform,
)
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig

pytestmark = pytest.mark.slow

# examples per operation and mode: enough to vary every field, small enough that both
# backends together stay well under a minute on two cores (building a body's strategy
# costs more than the requests)
EXAMPLES = {"positive": 25, "negative": 15}


@pytest.fixture(scope="module", params=BACKENDS)
def platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    with started_platform(request, tmp_path_factory, "fuzz") as p:
        yield p


def load_schema(p: Platform) -> Any:
    """The live /openapi.json (fetched past any proxy of the environment)."""
    config = SchemathesisConfig.from_dict({"generation": {"allow-x00": True}})
    return schemathesis.openapi.from_dict(fetch_spec(p), config=config)


def api_operations(schema: Any) -> list[Any]:
    out = []
    for result in schema.get_all_operations():
        out.append(result.ok())
    assert out, "the schema lists no operations"
    return out


def real_path_values(p: Platform, op: Any) -> dict[str, str] | None:
    """Alpha's values for the operation's path parameters, or None if one has none. A
    write gets a user and a token it may consume, never the callers' own."""
    mine = Operation(op.method.upper(), op.path, {})
    values: dict[str, str] = {}
    for param in mine.path_params:
        noun = noun_of(mine, param)
        if noun == "token":
            values[param] = p.spare_token_id(ADMIN)
        elif noun == "user" and not mine.is_read:
            values[param] = p.scratch_user()
        elif noun is not None and noun in p.values:
            values[param] = p.values[noun]
        else:
            return None
    return values


def fuzz(strategy: Any, examples: int, call: Any) -> None:
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        call(case)

    try:
        run()
    except Unsatisfiable:
        # nothing in the operation can be made invalid (no parameters, no body)
        pass


def has_constraints(op: Any) -> bool:
    """Whether a request can break the schema in a way worth sending: a body or a query
    parameter. A path parameter is any string, and breaking one only costs generation
    time (most attempts are rejected)."""
    spec = op.definition.raw if hasattr(op, "definition") else {}
    return "requestBody" in spec or any(p.get("in") == "query" for p in spec.get("parameters", []))


def test_fuzzing_every_operation_gets_no_server_error(platform: Platform) -> None:
    """With the admin's token (the caller every check lets furthest) no generated request
    gets a 5xx; the same request without a token is refused."""
    schema = load_schema(platform)
    session = requests.Session()
    session.trust_env = False  # a proxy from the environment must never see these
    auth = {"Authorization": f"Bearer {platform.tokens[ADMIN]}"}
    failures: list[str] = []
    sent = 0
    started = time.monotonic()
    for op in api_operations(schema):
        for mode, examples in EXAMPLES.items():
            if mode == "negative" and not has_constraints(op):
                continue
            values = real_path_values(platform, op) if mode == "positive" else None
            if values:
                strategy = op.as_strategy(GenerationMode.POSITIVE, path_parameters=values)
            else:
                strategy = op.as_strategy(GenerationMode(mode))

            def call(case: Any, mode: str = mode) -> None:
                nonlocal sent
                sent += 1
                label = f"{case.operation.label} [{mode}]"
                try:
                    response = case.call(
                        base_url=platform.url, session=session, headers=auth, timeout=30
                    )
                    anonymous = case.call(base_url=platform.url, session=session, timeout=30)
                except requests.RequestException as exc:
                    failures.append(f"{label}: no answer: {exc}")
                    return
                where = f"{response.request.method} {response.request.url} body={case.body!r:.300}"
                if response.status_code >= 500:
                    failures.append(f"{label} -> {response.status_code}: {where}")
                if case.operation.path not in PUBLIC and not refused(platform, anonymous):
                    failures.append(f"{label} without a token -> {anonymous.status_code}: {where}")

            fuzz(strategy, examples, call)
    elapsed = time.monotonic() - started
    print(f"\n{sent} fuzzed requests in {elapsed:.1f}s ({platform.backend})")
    assert sent >= 100, "too few requests were generated"
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:40])
    # the server survived it, and the admin can still get in
    assert platform.call(ANONYMOUS, "GET", "/healthz").status_code == 200
    assert platform.call(ADMIN, "GET", "/api/v1/me").status_code == 200


def refused(p: Platform, response: requests.Response) -> bool:
    """A 4xx, or the router's trailing-slash redirect to a path on this same server."""
    if response.status_code in (307, 308):
        location = response.headers.get("location", "")
        return location.startswith(p.url + "/")
    return 400 <= response.status_code < 500
