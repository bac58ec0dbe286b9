"""`treadle deploy`, `treadle serve` and `treadle deployments serve` against a real
`treadle up`: the deploy route (roles, project isolation, refusals), the controller
serving what the route deployed, model servers on the caller's machine loading the model
through /objects, and another project's model files staying out of reach.

One `treadle up` for the module, on a copy of the serving tests' registry home (clf
v1..v3, champion -> v1, challenger -> v2 in `default`), plus a model of project `other`
whose files `default` must not reach. The callers have homes of their own: whatever a
remote model server writes (its prediction log, its model cache) lands there.
"""

from __future__ import annotations

import dataclasses
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from serving_support import (
    FEATURES,
    MODEL,
    REGISTER,
    REPO,
    client,
    env,
    expected,
    free_port,
    module_home,
    opened,
    random_rows,
    telling_rows,
    wait_for,
)

import treadle
from treadle.models.format import read_manifest

pytestmark = pytest.mark.slow

API = "/api/v1"
OTHER = "other"
SECRET = "secret-model"
READY_SECONDS = 60.0


@dataclasses.dataclass(frozen=True)
class Platform:
    home: Path
    """The server's home."""
    url: str
    tokens: dict[str, str]
    """admin; editor, viewer (of default); otto (owner of `other` only)."""

    def http(self, who: str) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        return httpx.Client(base_url=self.url + API, headers=headers, timeout=30, trust_env=False)

    def caller_env(self, who: str, caller_home: Path) -> dict[str, str]:
        out = env(caller_home)
        out.update(TREADLE_URL=self.url, TREADLE_TOKEN=self.tokens[who])
        return out

    def cli(self, who: str, caller_home: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "treadle", *args],
            cwd=REPO,
            env=self.caller_env(who, caller_home),
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    home = module_home(tmp_path_factory, "remote")
    # a model of another project, trained differently, so its file is no object of default's
    registered = subprocess.run(
        [sys.executable, str(REGISTER), SECRET, "0.3"],
        cwd=REPO,
        env={**env(home), "TREADLE_PROJECT": OTHER},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert registered.returncode == 0, registered.stdout + registered.stderr
    port = free_port()
    log = home.parent / "up.log"
    with log.open("ab") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "treadle", "up", "--port", str(port)],
            cwd=REPO,
            env=env(home),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        assert wait_for(lambda: "is up on" in log.read_text(), READY_SECONDS), log.read_text()
        admin = re.search(r"trd_[A-Za-z0-9_-]+", log.read_text())
        assert admin is not None, log.read_text()
        url = f"http://127.0.0.1:{port}"
        tokens = {"admin": admin.group(0)}
        with treadle.Client(url, tokens["admin"], project="default", trust_env=False) as api:
            for user, project, role in (
                ("editor", "default", "editor"),
                ("viewer", "default", "viewer"),
                ("otto", OTHER, "owner"),
            ):
                api.create_user(user)
                api.for_project(project).set_member(user, role)
                tokens[user] = api.issue_token(user, "tests").token
        yield Platform(home, url, tokens)
    finally:
        # Ctrl-C stops the model servers its controller started, too (a SIGTERM leaves
        # them running, to be taken back by the next `treadle up`)
        up.send_signal(signal.SIGINT)
        up.wait(30)


def _ready(url: str) -> bool:
    try:
        with client(url, timeout=1.0) as http:
            return http.get("/v2/health/ready").status_code == 200
    except httpx.HTTPError:
        return False


def _predict(url: str, rows: list[list[float]]) -> httpx.Response:
    with client(url) as http:
        response = http.post("/predict", json={"columns": FEATURES, "data": rows})
    assert response.status_code == 200, response.text
    return response


@contextmanager
def remote_server(
    platform: Platform, who: str, caller_home: Path, *args: str
) -> Iterator[tuple[str, Path]]:
    """`treadle <args> --port P` run by `who` on their own home against the platform;
    yields (its url, its output file) once it is ready, stops it afterwards."""
    port = free_port()
    output = caller_home.parent / f"serve-{port}.log"
    caller_home.mkdir(parents=True, exist_ok=True)
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "treadle", *args, "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO,
            env=platform.caller_env(who, caller_home),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        started = wait_for(lambda: _ready(url) or proc.poll() is not None, READY_SECONDS, 0.1)
        assert started and proc.poll() is None, output.read_text()
        yield url, output
    finally:
        proc.terminate()  # uvicorn's clean shutdown flushes the prediction log
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)


# -- deploy -----------------------------------------------------------------------------


def test_a_remote_deploy_makes_revision_1_and_the_controller_serves_it(
    platform: Platform, tmp_path: Path
) -> None:
    port = free_port()
    args = ("deploy", f"{MODEL}@champion", "--name", "api", "--port", str(port))
    deployed = platform.cli("editor", tmp_path / "home", *args)
    assert deployed.returncode == 0, deployed.stderr
    assert deployed.stdout.splitlines() == [
        f"deployment api: revision 1 — created: single {MODEL}@champion",
        f"`treadle up` serves it on http://127.0.0.1:{port}",
    ]
    url = f"http://127.0.0.1:{port}"
    assert wait_for(lambda: _ready(url), READY_SECONDS, 0.2), "the controller did not serve it"
    rows = random_rows(8, seed=3)
    response = _predict(url, rows)
    assert response.json()["predictions"] == expected(platform.home, 1, rows)
    assert response.headers["x-model-version"] == "1"

    with platform.http("admin") as http:
        revisions = http.get("/projects/default/deployments/api/revisions").json()
        audit = http.get("/projects/default/audit").json()
    assert [(r["number"], r["created_by"]) for r in revisions] == [(1, "editor")]
    entry = next(a for a in audit if a["action"] == "deploy")
    assert (entry["user"], entry["target_id"]) == ("editor", "api")
    assert entry["detail"]["port"] == port and entry["detail"]["revision"] == 1

    with platform.http("editor") as http:
        again = http.put("/projects/default/deployments/api", json={"ref": f"{MODEL}@champion"})
        taken = http.put(
            "/projects/default/deployments/api-2", json={"ref": f"{MODEL}@champion", "port": port}
        )
    assert again.status_code == 200 and again.json()["revision"]["number"] == 1, again.text
    assert again.json()["deployment"]["spec"]["port"] == port  # it keeps where it listens
    assert taken.status_code == 409 and f"port {port}" in taken.json()["error"], taken.text


def test_the_deploy_route_checks_roles_projects_and_input(platform: Platform) -> None:
    body = {"ref": f"{MODEL}@champion", "policy": "single"}
    path = "/projects/default/deployments/refused"
    with platform.http("viewer") as http:
        refused = http.put(path, json=body)
    assert refused.status_code == 403, refused.text
    assert "editor" in refused.json()["error"]
    with platform.http("otto") as http:  # owner elsewhere: default does not exist for him
        hidden = http.put(path, json=body)
    assert hidden.status_code == 404, hidden.text

    with platform.http("editor") as http:
        for sent, status, fragment in (
            ({**body, "port": 70000}, 422, "port"),
            ({**body, "policy": "blue-green"}, 422, "policy"),
            ({**body, "ref": "nosuch@champion"}, 404, "nosuch"),
            ({**body, "ref": "@champion"}, 422, "names no model"),
            ({**body, "policy": "canary"}, 422, "candidate"),
        ):
            got = http.put(path, json=sent)
            assert got.status_code == status, (sent, got.text)
            assert fragment in got.json()["error"], (sent, got.text)
        bad_name = http.put("/projects/default/deployments/..x", json=body)
        assert bad_name.status_code == 422, bad_name.text
        assert http.get(path).status_code == 404  # nothing was made by the refusals


# -- serving on the caller's machine ----------------------------------------------------


def test_a_remote_serve_answers_like_a_local_load(platform: Platform, tmp_path: Path) -> None:
    caller = tmp_path / "laptop"
    rows = random_rows(16, seed=11)
    # a viewer may serve: serving reads the registry and the model's files
    with remote_server(platform, "viewer", caller, "serve", f"{MODEL}@champion") as (url, _):
        response = _predict(url, rows)
    assert response.json()["predictions"] == expected(platform.home, 1, rows)
    assert response.headers["x-model-version"] == "1"
    # the model was loaded into the caller's cache and the predictions logged at home
    assert any((caller / "model-cache").iterdir())
    assert list((caller / "predictions" / "default" / f"{MODEL}_champion").rglob("*.parquet"))
    assert not (platform.home / "predictions" / "default" / f"{MODEL}_champion").exists()


def test_a_remote_deployment_server_follows_its_alias(platform: Platform, tmp_path: Path) -> None:
    caller = tmp_path / "laptop"
    deployed = platform.cli("editor", caller, "deploy", f"{MODEL}@challenger", "--name", "svc")
    assert deployed.returncode == 0, deployed.stderr
    assert "serve it with `treadle deployments serve svc`" in deployed.stdout
    rows = telling_rows(platform.home, 4, seed=5)
    with remote_server(platform, "editor", caller, "deployments", "serve", "svc") as (url, out):
        assert _predict(url, rows).headers["x-model-version"] == "2"
        moved = platform.cli("editor", caller, "models", "alias", MODEL, "challenger", "1")
        assert moved.returncode == 0, moved.stderr
        assert wait_for(lambda: _predict(url, rows).headers["x-model-version"] == "1", 30, 0.2), (
            out.read_text()
        )
        assert _predict(url, rows).json()["predictions"] == expected(platform.home, 1, rows)
    with platform.http("viewer") as http:
        revisions = http.get("/projects/default/deployments/svc/revisions").json()
    # the alias move was recorded through the server, as the user who runs the server
    assert [(r["number"], r["created_by"]) for r in revisions] == [(1, "editor"), (2, "editor")]


# -- objects ----------------------------------------------------------------------------


def test_model_files_are_served_to_their_own_project_only(platform: Platform) -> None:
    with opened(platform.home) as store:
        mine = store.projects.get_project("default")
        theirs = store.projects.get_project(OTHER)
        version = store.models.get_version(store.models.get_model(mine.id, MODEL).id, 1)
        secret = store.models.get_version(store.models.get_model(theirs.id, SECRET).id, 1)
        own_file = read_manifest(version.manifest_sha, store.objects).files["model.skops"]
        secret_file = read_manifest(secret.manifest_sha, store.objects).files["model.skops"]
    assert own_file != secret_file
    with platform.http("viewer") as http:
        got = http.get(f"/projects/default/objects/{own_file}")
        assert got.status_code == 200 and got.headers["x-sha256"] == own_file
        assert http.get(f"/projects/default/objects/{secret_file}").status_code == 404
    with platform.http("admin") as http:  # not even an admin reaches it through default
        assert http.get(f"/projects/default/objects/{secret_file}").status_code == 404
    with platform.http("otto") as http:
        assert http.get(f"/projects/{OTHER}/objects/{secret_file}").status_code == 200
        assert http.get(f"/projects/{OTHER}/objects/{own_file}").status_code == 404
