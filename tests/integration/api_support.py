"""A real `treadle up` for the platform-server security tests, seeded with real data and
spoken to over HTTP as six callers: anonymous, viewer, editor, owner (members of `alpha`),
the server admin, and `beta-owner` (owner of `beta` only).

Each backend (SQLite, PostgreSQL) gets its own home and database per test module; the
database is dropped afterwards. The routes under test are read from the server's own
/openapi.json, so a route added later is walked without anyone listing it here.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "tests" / "resources" / "api_seed.py"
_NEXT_TO_PYTHON = Path(sys.executable).with_name("treadle")
TREADLE = _NEXT_TO_PYTHON if _NEXT_TO_PYTHON.exists() else REPO / ".venv" / "bin" / "treadle"
PG_ADMIN_URL = os.environ.get(
    "TREADLE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
API = "/api/v1"
READY_SECONDS = 60.0
TOKEN = re.compile(r"trd_[A-Za-z0-9_\-]{20,}")

MODEL = "sec-model"
DEPLOYMENT = "sec-svc"
PIPELINE = "seed_flow"
# a policy that acts on an alert nobody raises in the walk
SEED_POLICY = {
    "name": "seed-policy",
    "on": {"event": "monitor.alert", "where": {"monitor": "nobody"}},
    "run": {"pipeline": "seed_flow"},
    "register": {"model": "sec-model"},
}
SECRET_LINE = "the log line of project alpha's load step"

ANONYMOUS, VIEWER, EDITOR, OWNER, ADMIN, BETA_OWNER = (
    "anonymous",
    "viewer",
    "editor",
    "owner",
    "admin",
    "beta-owner",
)
# least privileged first, so a write that consumes its target (a DELETE) is tried by the
# callers who must be refused before the ones who may succeed
ROLES = (ANONYMOUS, BETA_OWNER, VIEWER, EDITOR, OWNER, ADMIN)
MEMBER_ROLES = (VIEWER, EDITOR, OWNER)
RANK = {VIEWER: 1, EDITOR: 2, OWNER: 3}
# answered without a token: liveness and the API's own description
PUBLIC = frozenset({"/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect"})

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


# -- processes --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env(home: Path, db_url: str | None) -> dict[str, str]:
    """The parent's environment minus every TREADLE_* setting and any proxy, plus a home
    (and database) of the test's own."""
    out = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TREADLE_") and "proxy" not in k.lower()
    }
    out.update(
        TREADLE_HOME=str(home),
        TREADLE_USER="api-tests",
        COLUMNS="200",
        NO_COLOR="1",
        PYTHONUNBUFFERED="1",
    )
    if db_url is not None:
        out["TREADLE_DB_URL"] = db_url
    return out


def seed(home: Path, db_url: str | None) -> dict[str, Any]:
    """Runs, a model, aliases and a deployment in alpha; a run and a model in beta."""
    home.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, str(SEED)],
        cwd=REPO,
        env=env(home, db_url),
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seeded: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return seeded


@dataclasses.dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    stderr_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def printed_tokens(self) -> set[str]:
        return set(TOKEN.findall(self.stderr()))

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return int(self.proc.returncode)

    def kill9(self) -> int:
        self.proc.send_signal(signal.SIGKILL)
        return int(self.proc.wait(15))


def start_server(home: Path, db_url: str | None, logs: Path) -> Server:
    """`treadle up --port P` as a process, returned once /healthz answers 200."""
    logs.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):
        port = free_port()
        stderr_path = logs / f"up-{port}-{uuid.uuid4().hex[:6]}.err"
        with stderr_path.open("wb") as err, (logs / f"up-{port}.out").open("wb") as out:
            proc = subprocess.Popen(
                [str(TREADLE), "up", "--host", "127.0.0.1", "--port", str(port)],
                cwd=REPO,
                env=env(home, db_url),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
        server = Server(proc, port, stderr_path)
        deadline = time.monotonic() + READY_SECONDS
        with httpx.Client(base_url=server.url, timeout=2.0, trust_env=False) as http:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                with suppress(httpx.TransportError):
                    if http.get("/healthz").status_code == 200:
                        return server
                time.sleep(0.05)
        server.stop()
        # someone else took the port between choosing it and binding it: try another
        if "address already in use" in server.stderr().lower() and attempt < 2:
            continue
        raise AssertionError(
            f"treadle up was not ready (exit {proc.returncode}):\n{server.stderr()}"
        )
    raise AssertionError("unreachable")


# -- databases --------------------------------------------------------------------------


def _pg_admin() -> Any:
    import psycopg

    plain = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(plain, autocommit=True, connect_timeout=3)


def fresh_pg_database() -> str:
    """An empty database of the caller's own (drop it with `drop_pg_database`)."""
    name = f"treadle_api_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_pg_database(url: str) -> None:
    with _pg_admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


@contextmanager
def database_url(request: pytest.FixtureRequest, home: Path) -> Iterator[str]:
    """The home's database on the backend the fixture is parametrised with."""
    if request.param == "sqlite":
        yield f"sqlite:///{home / 'treadle.db'}"
        return
    request.getfixturevalue("pg_url")  # skips, with the reason, where no server answers
    url = fresh_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


# -- the seeded platform ----------------------------------------------------------------


@dataclasses.dataclass
class Platform:
    backend: str
    root: Path
    """Holds the home, the server logs and `outside/`, a folder no request may touch."""
    home: Path
    db_url: str
    server: Server
    seeded: dict[str, Any]
    tokens: dict[str, str] = dataclasses.field(default_factory=dict)
    token_ids: dict[str, str] = dataclasses.field(default_factory=dict)
    values: dict[str, str] = dataclasses.field(default_factory=dict)
    """Real alpha values for path parameters, by noun."""
    alpha_ids: set[str] = dataclasses.field(default_factory=set)
    """Every id of alpha's data: none may reach a caller outside alpha."""
    _counter: Iterator[int] = dataclasses.field(default_factory=itertools.count)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def outside(self) -> Path:
        return self.root / "outside"

    @property
    def sentinel(self) -> Path:
        return self.outside / "sentinel.txt"

    def unique(self, stem: str) -> str:
        return f"{stem}-{next(self._counter)}-{uuid.uuid4().hex[:6]}"

    def headers(self, role: str) -> dict[str, str]:
        return {} if role == ANONYMOUS else {"Authorization": f"Bearer {self.tokens[role]}"}

    def client(self, role: str = ADMIN, timeout: float = 30.0) -> httpx.Client:
        # trust_env off: a proxy from the environment must never see these requests
        return httpx.Client(
            base_url=self.url, headers=self.headers(role), timeout=timeout, trust_env=False
        )

    def call(self, role: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self.client(role) as http:
            return http.request(method, path, **kwargs)

    def ok(self, role: str, method: str, path: str, **kwargs: Any) -> Any:
        response = self.call(role, method, path, **kwargs)
        assert response.status_code < 300, (
            f"{method} {path} as {role}: {response.status_code} {response.text[:500]}"
        )
        return response.json() if response.content else None

    # -- scratch objects a write may consume --------------------------------------------

    def scratch_user(self, project: str | None = "alpha", role: str = VIEWER) -> str:
        name = self.unique("scratch")
        self.ok(ADMIN, "POST", f"{API}/users", json={"name": name})
        if project is not None:
            self.ok(ADMIN, "PUT", f"{API}/projects/{project}/members/{name}", json={"role": role})
        return name

    def token_for(self, user: str, **extra: Any) -> tuple[str, str]:
        """(token id, secret) of a new token of `user`, issued by the admin."""
        body = self.ok(ADMIN, "POST", f"{API}/users/{user}/tokens", json={"name": "t", **extra})
        return str(body["id"]), str(body["token"])

    def spare_token_id(self, role: str) -> str:
        """A new token of the caller's own, so revoking it leaves their main one working."""
        if role == ANONYMOUS:
            return uuid.uuid4().hex
        return str(self.ok(role, "POST", f"{API}/tokens", json={"name": "spare"})["id"])

    # -- what the store holds -----------------------------------------------------------

    def engine(self) -> sa.Engine:
        return sa.create_engine(self.db_url, poolclass=sa.pool.NullPool)

    def counts(self) -> dict[str, int]:
        """Rows per table, every table the schema has (new ones included)."""
        engine = self.engine()
        try:
            with engine.connect() as conn:
                names = sorted(sa.inspect(conn).get_table_names())
                return {
                    name: int(conn.execute(sa.text(f'SELECT COUNT(*) FROM "{name}"')).scalar_one())
                    for name in names
                    if name != "alembic_version"
                }
        finally:
            engine.dispose()

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        engine = self.engine()
        try:
            with engine.connect() as conn:
                return [dict(r._mapping) for r in conn.execute(sa.text(sql), params)]
        finally:
            engine.dispose()

    def execute(self, sql: str, **params: Any) -> None:
        engine = self.engine()
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(sql), params)
        finally:
            engine.dispose()

    def outside_snapshot(self) -> dict[str, tuple[int, int, str]]:
        """Every file under the root but outside the home and the logs: size, mtime and
        sha256, so a write, a touch or a new file shows."""
        out: dict[str, tuple[int, int, str]] = {}
        for path in sorted(self.root.rglob("*")):
            rel = path.relative_to(self.root)
            if rel.parts[0] in ("home", "logs") or not path.is_file():
                continue
            stat = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            out[str(rel)] = (stat.st_size, stat.st_mtime_ns, digest)
        return out


def _enroll(p: Platform) -> None:
    """The callers of the matrix, each with a token issued through the API."""
    for name, project, role in (
        (VIEWER, "alpha", VIEWER),
        (EDITOR, "alpha", EDITOR),
        (OWNER, "alpha", OWNER),
        (BETA_OWNER, "beta", OWNER),
    ):
        p.ok(ADMIN, "POST", f"{API}/users", json={"name": name})
        p.ok(ADMIN, "PUT", f"{API}/projects/{project}/members/{name}", json={"role": role})
        token_id, secret = p.token_for(name)
        p.tokens[name], p.token_ids[name] = secret, token_id
    p.token_ids[ADMIN] = p.ok(ADMIN, "GET", f"{API}/tokens")[0]["id"]


def _collect_values(p: Platform) -> None:
    alpha, beta = p.seeded["alpha"], p.seeded["beta"]
    run = alpha["runs"][0]
    steps = p.ok(ADMIN, "GET", f"{API}/projects/alpha/runs/{run}/steps")
    artifacts = p.ok(ADMIN, "GET", f"{API}/projects/alpha/runs/{run}/artifacts")
    assert steps and artifacts, "the seed run recorded no steps or artifacts"
    p.values.update(
        project="alpha",
        run=run,
        artifact=artifacts[0]["id"],
        step_run=steps[0]["id"],
        node=steps[0]["node"],
        experiment="default",
        experiment_id=alpha["experiment_id"],
        pipeline_version=alpha["pipeline_version_id"],
        sha=alpha["manifest_sha"],
        model=MODEL,
        model_id=alpha["model_id"],
        version="1",
        version_id=alpha["version_id"],
        alias="champion",
        deployment=DEPLOYMENT,
        deployment_id=alpha["deployment_id"],
        revision="1",
        pipeline=PIPELINE,
        key="loss",
        user=VIEWER,
    )
    # a schedule (never due in the walk), a trigger and an event it acted on
    p.ok(
        ADMIN,
        "POST",
        f"{API}/projects/alpha/schedules",
        json={"name": "seed-schedule", "pipeline": PIPELINE, "cron": "0 3 1 1 *"},
    )
    trigger = p.ok(
        ADMIN,
        "POST",
        f"{API}/projects/alpha/triggers",
        json={"name": "seed-trigger", "kind": "manual", "pipeline": PIPELINE},
    )["trigger"]
    fired = p.ok(ADMIN, "POST", f"{API}/projects/alpha/triggers/seed-trigger/fire", json={})
    p.ok(
        ADMIN,
        "POST",
        f"{API}/projects/alpha/monitors",
        json={"name": "seed-monitor", "deployment": DEPLOYMENT, "window_size": 100},
    )
    p.values.update(
        monitor="seed-monitor",
        policy=SEED_POLICY["name"],
        policy_run=p.seeded["alpha"]["policy_run_id"],
        schedule="seed-schedule",
        trigger="seed-trigger",
        trigger_id=trigger["id"],
        event=fired["event"]["id"],
    )
    p.seeded["alpha"]["artifacts"] = [a["id"] for a in artifacts]
    p.seeded["alpha"]["steps"] = [s["id"] for s in steps]
    for cached_run in alpha["runs"][1:]:
        p.seeded["alpha"]["steps"] += [
            s["id"] for s in p.ok(ADMIN, "GET", f"{API}/projects/alpha/runs/{cached_run}/steps")
        ]
    beta_run = beta["runs"][0]
    p.seeded["beta"]["artifacts"] = [
        a["id"] for a in p.ok(ADMIN, "GET", f"{API}/projects/beta/runs/{beta_run}/artifacts")
    ]
    p.alpha_ids = {
        alpha["project_id"],
        *alpha["runs"],
        *p.seeded["alpha"]["artifacts"],
        *p.seeded["alpha"]["steps"],
        alpha["model_id"],
        alpha["version_id"],
        alpha["deployment_id"],
        alpha["experiment_id"],
        alpha["pipeline_version_id"],
        alpha["manifest_sha"],
    }


@contextmanager
def started_platform(
    request: pytest.FixtureRequest, factory: pytest.TempPathFactory, label: str
) -> Iterator[Platform]:
    """Seed a home, start `treadle up` on it, enroll the callers; stopped (and its
    PostgreSQL database dropped) afterwards."""
    root = factory.mktemp(f"{label}-{request.param}")
    home = root / "home"
    with database_url(request, home) as db_url:
        outside = root / "outside"
        outside.mkdir()
        (outside / "sentinel.txt").write_text("sentinel: no request may read or change this\n")
        given_url = None if request.param == "sqlite" else db_url
        seeded = seed(home, given_url)
        server = start_server(home, given_url, root / "logs")
        try:
            printed = server.printed_tokens()
            assert len(printed) == 1, f"expected one admin token on stderr:\n{server.stderr()}"
            p = Platform(request.param, root, home, db_url, server, seeded)
            p.tokens[ADMIN] = printed.pop()
            _enroll(p)
            _collect_values(p)
            yield p
        finally:
            server.stop()


# -- the OpenAPI description ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Operation:
    method: str
    path: str
    spec: Mapping[str, Any] = dataclasses.field(compare=False, hash=False, repr=False)

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def is_read(self) -> bool:
        return self.method in ("GET", "HEAD")

    @property
    def in_project(self) -> bool:
        """Under /projects/{project}: access is decided by the caller's role there."""
        return self.path == f"{API}/projects/{{project}}" or self.path.startswith(
            f"{API}/projects/{{project}}/"
        )

    def parameters(self, where: str) -> list[Mapping[str, Any]]:
        return [p for p in self.spec.get("parameters", []) if p.get("in") == where]

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{([^}]+)}", self.path)

    @property
    def takes_file(self) -> bool:
        return "application/zip" in self.spec.get("requestBody", {}).get("content", {})

    @property
    def takes_bytes(self) -> bool:
        """The body is an object's bytes, named by their sha256 in the query."""
        content = self.spec.get("requestBody", {}).get("content", {})
        return "application/octet-stream" in content and not self.takes_file

    def body_schema(self, spec: Mapping[str, Any]) -> Mapping[str, Any] | None:
        content = self.spec.get("requestBody", {}).get("content", {})
        for kind, media in content.items():
            if "json" in kind:
                return resolve(spec, media.get("schema", {}))
        return None


def operations(spec: Mapping[str, Any]) -> list[Operation]:
    out = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method.upper() in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"):
                out.append(Operation(method.upper(), path, op))
    return out


def resolve(spec: Mapping[str, Any], schema: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in schema:
        node: Any = spec
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def _pattern_alternatives(pattern: str) -> list[str]:
    found = re.fullmatch(r"\^?\(([^()]*)\)\$?", pattern)
    return found.group(1).split("|") if found else []


def sample_string(schema: Mapping[str, Any], name: str, fresh: str) -> str:
    """A string the schema accepts, preferring the seeded value a field of that name
    would hold (a role, a metric key, a model name) and a fresh name for `name`."""
    if schema.get("enum"):
        return str(schema["enum"][0])
    by_name = {
        "role": VIEWER,
        "key": "loss",
        "alias": "champion",
        "model": MODEL,
        "policy": "single",
        "source": "challenger",
        "target": "champion",
        "candidate": "challenger",
        "primary": "champion",
        "pipeline": PIPELINE,
        "ref": f"{MODEL}@champion",
        "cron": "0 3 1 1 *",
    }
    candidates = [by_name.get(name, fresh), fresh, VIEWER, "x", "a1", "1", MODEL]
    candidates += ["a" * 32, "a" * 64]  # an id, a sha256
    pattern = schema.get("pattern")
    if pattern:
        candidates = _pattern_alternatives(pattern) + candidates
    low, high = int(schema.get("minLength", 0)), int(schema.get("maxLength", 10**6))
    for candidate in candidates:
        if len(candidate) < low:
            candidate = candidate + "x" * (low - len(candidate))
        if len(candidate) > high:
            continue
        if pattern and not re.search(pattern, candidate):
            continue
        return candidate
    raise AssertionError(f"cannot make a string for {name!r} matching {schema}")


def minimal(
    spec: Mapping[str, Any],
    schema: Mapping[str, Any],
    name: str,
    fresh: str,
    *,
    one_item: bool = False,
) -> Any:
    """The smallest value `schema` accepts: required properties only, empty arrays (or
    arrays of one item with `one_item`, so what the items hold is sent too)."""
    schema = resolve(spec, schema)

    def inner(sub: Mapping[str, Any], key: str) -> Any:
        return minimal(spec, sub, key, fresh, one_item=one_item)

    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [resolve(spec, s) for s in schema[key]]
            useful = [s for s in options if s.get("type") != "null"] or options
            return inner(useful[0], name)
    if "allOf" in schema:
        return inner(schema["allOf"][0], name)
    if "const" in schema:
        return schema["const"]
    if "default" in schema and schema.get("default") is not None:
        return schema["default"]
    kind = schema.get("type", "object")
    if kind == "object":
        props = schema.get("properties", {})
        return {key: inner(props.get(key, {}), key) for key in schema.get("required", [])}
    if kind == "array":
        count = max(int(schema.get("minItems", 0)), 1 if one_item else 0)
        return [inner(schema.get("items", {}), name) for _ in range(count)]
    if kind == "string":
        return sample_string(schema, name, fresh)
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        value = max(1, low + (1 if "exclusiveMinimum" in schema else 0))
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return False
    return None


# nouns a path parameter stands for: by the segment before it, else by its own name
_BY_SEGMENT = {
    "projects": "project",
    "runs": "run",
    "artifacts": "artifact",
    "steps": "step_run",
    "step-runs": "step_run",
    "experiments": "experiment",
    "pipelines": "pipeline",
    "pipeline-versions": "pipeline_version",
    "objects": "sha",
    "models": "model",
    "versions": "version",
    "model-versions": "version_id",
    "aliases": "alias",
    "deployments": "deployment",
    "revisions": "revision",
    "metrics": "key",
    "users": "user",
    "members": "user",
    "tokens": "token",
    "schedules": "schedule",
    "triggers": "trigger",
    "events": "event",
    "hooks": "trigger_id",
    "monitors": "monitor",
    "policies": "policy",
    "policy-runs": "policy_run",
}
_BY_NAME = {
    "project": "project",
    "run_id": "run",
    "artifact_id": "artifact",
    "step_id": "step_run",
    "step_run_id": "step_run",
    "step": "node",
    "node": "node",
    "experiment": "experiment",
    "experiment_id": "experiment_id",
    "pipeline": "pipeline",
    "pipeline_version_id": "pipeline_version",
    "sha": "sha",
    "sha256": "sha",
    "model": "model",
    "model_name": "model",
    "model_id": "model_id",
    "version": "version",
    "version_id": "version_id",
    "alias": "alias",
    "deployment": "deployment",
    "deployment_name": "deployment",
    "deployment_id": "deployment_id",
    "revision": "revision",
    "key": "key",
    "user": "user",
    "token_id": "token",
}


def noun_of(op: Operation, param: str) -> str | None:
    segments = op.path.split("/")
    index = segments.index("{" + param + "}")
    by_segment = _BY_SEGMENT.get(segments[index - 1]) if index > 0 else None
    return by_segment or _BY_NAME.get(param)


@dataclasses.dataclass
class Prepared:
    method: str
    url: str
    json_body: Any
    params: dict[str, Any]
    note: str = ""
    """Why an answer may legitimately differ (a parameter with no seeded value)."""
    content: bytes | None = None
    """The body of an endpoint that takes a file (a pipeline package) or bytes."""
    content_type: str = "application/zip"


def prepare(
    p: Platform, op: Operation, role: str, spec: Mapping[str, Any], *, consume: bool = True
) -> Prepared:
    """The request `role` sends to walk `op`: real alpha values in the path, a minimal
    valid body and the required query parameters. A write that would consume its target
    (a member, a token, the project itself) gets a fresh one made for it; with
    `consume=False` it gets one that does not exist instead, for requests that must be
    refused before they reach the route."""
    values: dict[str, str] = {}
    notes = []
    for param in op.path_params:
        noun = noun_of(op, param)
        project_itself = op.path == f"{API}/projects/{{project}}" and not op.is_read
        if noun == "user" and not op.is_read:
            values[param] = p.scratch_user() if consume else "no-such-user"
        elif noun == "token":
            if op.is_read:
                values[param] = p.token_ids[ADMIN]
            else:
                values[param] = p.spare_token_id(role) if consume else uuid.uuid4().hex
        elif noun == "project" and project_itself:
            # a write to the project itself (rename, delete) gets a copy of alpha's members
            values[param] = scratch_project(p) if consume else "no-such-project"
        elif noun is not None and noun in p.values:
            values[param] = p.values[noun]
        else:
            values[param] = "unknown"
            notes.append(f"no seeded value for path parameter {param!r}")
    url = op.path
    for param, value in values.items():
        url = url.replace("{" + param + "}", value)
    query: dict[str, Any] = {}
    if op.takes_bytes:
        query["sha256"] = hashlib.sha256(UPLOADED).hexdigest()
    for q in op.parameters("query"):
        if q.get("required") and q["name"] not in query:
            query[q["name"]] = minimal(spec, q.get("schema", {}), q["name"], p.unique("q"))
    schema = op.body_schema(spec)
    body = minimal(spec, schema, "body", p.unique("sec")) if schema is not None else None
    if isinstance(body, dict):  # body fields that name seeded objects get them
        body.update({k: p.values[k] for k in body if k in BODY_NOUNS and k in p.values})
    content = tiny_package() if op.takes_file else None
    if op.takes_bytes:
        return Prepared(
            op.method, url, body, query, "; ".join(notes), UPLOADED, "application/octet-stream"
        )
    return Prepared(op.method, url, body, query, "; ".join(notes), content)


BODY_NOUNS = frozenset({"pipeline_version"})
UPLOADED = b"the bytes an upload route is walked with\n"

TINY_PIPELINE = """
from treadle import pipeline, step


@step
def double(x: int) -> int:
    return 2 * x


@pipeline
def tiny_flow(x: int = 2) -> None:
    double(x)
"""


@functools.cache
def tiny_package() -> bytes:
    """A real package of a one-step pipeline, built as `treadle pipeline build` does."""
    from treadle.engine import find_pipeline
    from treadle.packaging import build_package

    folder = Path(tempfile.mkdtemp(prefix="tiny-package-"))
    (folder / "tiny_flow.py").write_text(TINY_PIPELINE)
    found, source = find_pipeline(str(folder / "tiny_flow.py"))
    assert source is not None
    return build_package(found, source).data


def scratch_project(p: Platform) -> str:
    name = p.unique("scratch-project")
    p.ok(ADMIN, "POST", f"{API}/projects", json={"name": name})
    for user, role in ((VIEWER, VIEWER), (EDITOR, EDITOR), (OWNER, OWNER)):
        p.ok(ADMIN, "PUT", f"{API}/projects/{name}/members/{user}", json={"role": role})
    return name


def send(p: Platform, role: str, request: Prepared) -> httpx.Response:
    kwargs: dict[str, Any] = {"params": request.params}
    if request.content is not None:
        kwargs["content"] = request.content
        kwargs["headers"] = {"content-type": request.content_type}
    elif request.json_body is not None:
        kwargs["json"] = request.json_body
    return p.call(role, request.method, request.url, **kwargs)


def fetch_spec(p: Platform) -> dict[str, Any]:
    response = p.call(ANONYMOUS, "GET", "/openapi.json")
    assert response.status_code == 200, response.text
    spec: dict[str, Any] = response.json()
    return spec


def error_of(response: httpx.Response) -> str:
    """The message of a refusal; fails if the body is not a JSON error."""
    assert response.headers.get("content-type", "").startswith("application/json"), (
        f"{response.status_code}: not JSON: {response.text[:300]}"
    )
    body = response.json()
    message = body.get("error") or body.get("detail") if isinstance(body, dict) else None
    assert isinstance(message, str) and message, f"no error message in {body}"
    return message


# -- requests httpx would tidy up -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Raw:
    status: int
    body: bytes
    content_type: str
    location: str | None = None

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def raw_request(
    p: Platform,
    method: str,
    target: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    chunked: bool = False,
) -> Raw:
    """Send the request line exactly as given (no dot-segment clean-up, no re-encoding),
    optionally with the body in chunks and no Content-Length."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", p.server.port, timeout=60)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            data = body or b""
            step = 1 << 20
            for start in range(0, len(data), step):
                part = data[start : start + step]
                conn.send(b"%x\r\n" % len(part) + part + b"\r\n")
            conn.send(b"0\r\n\r\n")
        else:
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
        response = conn.getresponse()
        return Raw(
            response.status,
            response.read(),
            response.getheader("content-type") or "",
            response.getheader("location"),
        )
    finally:
        conn.close()


# what a path or URI field must never be able to reach
HOSTILE = (
    "../",
    "..\\",
    "../../../../../../etc/passwd",
    "..\\..\\..\\..\\windows\\win.ini",
    "/etc/passwd",
    "C:\\Windows\\win.ini",
    "%2e%2e%2f",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%252e%252e%252f",
    "%252e%252e%252fetc%252fpasswd",
    "..%2f..%2fetc%2fpasswd",
    "....//....//etc/passwd",
    "file:///etc/passwd",
    "//proc/self/root/etc/passwd",
    "/proc/self/environ",
    "..",
    ".",
)
# text that would show a file outside the store was read
FOREIGN_MARKERS = ("root:x:0:0", "root:*:0:0", "sentinel: no request", "[fonts]", "PATH=")
