"""Labels through the platform API: `POST /api/v1/projects/{p}/deployments/{name}/feedback`
on a real `treadle up`, passed on to the model server its deployment controller runs.

One platform for the module: the serving tests' registry home (`clf`, a classifier that
predicts integers; champion -> v1) with `treadle up` started on it, an editor and a
viewer enrolled through the API, and three deployments made through the API: `clf-api`
with a port (served by the controller), `clf-noport` without one, and `clf-down` on a
port this module holds bound without listening, so its server can never start there.
Predictions go straight to the model server; labels go through the API, the Client and
the CLI, and are read back from the feedback log the way the monitors read it.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_support import API, Server, start_server
from serving_support import (
    FEATURES,
    MODEL,
    REPO,
    TREADLE,
    client,
    env,
    free_port,
    module_home,
    random_rows,
    wait_for,
)

import treadle
from treadle.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    StoreUnavailableError,
)
from treadle.monitoring.monitor import feedback_dir, read_feedback

pytestmark = pytest.mark.slow

PROJECT = "default"
SERVED, NO_PORT, DOWN = "clf-api", "clf-noport", "clf-down"
ADMIN, EDITOR, VIEWER = "admin", "editor", "viewer"


@dataclasses.dataclass
class Platform:
    home: Path
    server: Server
    served_port: int
    down_port: int
    tokens: dict[str, str]

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def model_server(self) -> str:
        return f"http://127.0.0.1:{self.served_port}"

    def feedback(self, role: str, deployment: str, body: Any) -> httpx.Response:
        path = f"{API}/projects/{PROJECT}/deployments/{deployment}/feedback"
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        with client(self.url) as http:
            return http.post(path, json=body, headers=headers)

    def client(self, role: str = EDITOR) -> treadle.Client:
        return treadle.Client(self.url, self.tokens[role], project=PROJECT, trust_env=False)


def _ok(http: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    answer = http.request(method, path, **kwargs)
    assert answer.is_success, f"{method} {path}: {answer.status_code} {answer.text[:300]}"
    return answer.json()


def _ready(port: int) -> bool:
    try:
        with client(f"http://127.0.0.1:{port}", timeout=1.0) as http:
            return http.get("/v2/health/ready").status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    home = module_home(tmp_path_factory, "feedback-api")
    # bound, never listening: a connection there is refused, and a server cannot bind it
    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    held.bind(("127.0.0.1", 0))
    down_port = int(held.getsockname()[1])
    server = start_server(home, None, home.parent / "logs")
    try:
        (admin,) = server.printed_tokens()
        tokens = {ADMIN: admin}
        with client(server.url) as http:
            http.headers["Authorization"] = f"Bearer {admin}"
            for user in (EDITOR, VIEWER):
                _ok(http, "POST", f"{API}/users", json={"name": user})
                _ok(http, "PUT", f"{API}/projects/{PROJECT}/members/{user}", json={"role": user})
                issued = _ok(http, "POST", f"{API}/users/{user}/tokens", json={"name": "t"})
                tokens[user] = issued["token"]
        served_port = free_port()
        with treadle.Client(server.url, tokens[EDITOR], project=PROJECT, trust_env=False) as c:
            c.deploy(f"{MODEL}@champion", SERVED, port=served_port)
            c.deploy(f"{MODEL}@champion", NO_PORT)
            c.deploy(f"{MODEL}@champion", DOWN, port=down_port)
        assert wait_for(lambda: _ready(served_port), 90, interval=0.2), server.stderr()
        yield Platform(home, server, served_port, down_port, tokens)
    finally:
        server.stop()
        held.close()


def predict(p: Platform, rows: int) -> str:
    """A real prediction of `rows` rows by the deployment's model server; its request id."""
    request_id = f"req-{uuid.uuid4().hex[:10]}"
    with client(p.model_server) as http:
        answer = http.post(
            "/predict",
            json={"columns": FEATURES, "data": random_rows(rows, seed=rows)},
            headers={"x-request-id": request_id},
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["request_id"] == request_id and len(answer.json()["predictions"]) == rows
    return request_id


def labels_in_log(p: Platform, *request_ids: str) -> dict[tuple[str, int], tuple[Any, int]]:
    """(request id, row) -> (label, model version), as the monitors read the log."""
    frame = read_feedback(feedback_dir(p.home, PROJECT, SERVED))
    mine = frame[frame["request_id"].isin(request_ids)]
    return {
        (str(r.request_id), int(r.row)): (r.label, int(r.version))
        for r in mine.itertuples(index=False)
    }


def written_since_now(p: Platform) -> None:
    """Returns once a label sent now is in the log: the log keeps the order labels were
    accepted in, so anything accepted before it is in the log too."""
    marker = predict(p, 1)
    assert p.feedback(EDITOR, SERVED, {"request_id": marker, "label": 1}).status_code == 202
    assert wait_for(lambda: bool(labels_in_log(p, marker)), 30)


def assert_refused(answer: httpx.Response, status: int, *fragments: str) -> dict[str, Any]:
    assert answer.status_code == status, f"{answer.status_code}: {answer.text[:500]}"
    assert answer.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = answer.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    for fragment in fragments:
        assert fragment in body["error"] + " " + body.get("hint", ""), body
    return body


# -- accepted -----------------------------------------------------------------------------


def test_labels_of_every_body_shape_reach_the_feedback_log(platform: Platform) -> None:
    one, three = predict(platform, 1), predict(platform, 3)
    for body, count in (
        ({"request_id": one, "label": 1}, 1),
        ({"request_id": three, "row": 2, "label": 0}, 1),
        ({"request_id": three, "labels": [0, 1, 1]}, 3),  # row 2 again: the newest wins
        (
            {
                "feedback": [
                    {"request_id": one, "label": 0},
                    {"request_id": three, "row": 1, "label": 0},
                ]
            },
            2,
        ),
    ):
        answer = platform.feedback(EDITOR, SERVED, body)
        assert (answer.status_code, answer.json()) == (202, {"accepted": count}), answer.text
    with platform.client() as editor:
        assert editor.send_feedback(SERVED, one, 1) == 1
        assert editor.send_feedback(SERVED, feedback=[{"request_id": three, "label": 1}]) == 1

    expected = {
        (one, 0): (1, 1),
        (three, 0): (1, 1),
        (three, 1): (0, 1),
        (three, 2): (1, 1),
    }
    assert wait_for(lambda: labels_in_log(platform, one, three) == expected, 30), labels_in_log(
        platform, one, three
    )


def test_the_route_and_its_body_are_in_the_openapi_spec(platform: Platform) -> None:
    with client(platform.url) as http:
        spec = http.get("/openapi.json").json()
    route = spec["paths"][f"{API}/projects/{{project}}/deployments/{{name}}/feedback"]["post"]
    ref = route["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert {"request_id", "row", "label", "labels", "feedback"} <= set(body["properties"])
    assert "202" in route["responses"]


# -- the model server's refusals, unchanged -------------------------------------------------


def test_the_model_servers_refusals_come_back_unchanged(platform: Platform) -> None:
    known = predict(platform, 2)
    unknown = assert_refused(
        platform.feedback(EDITOR, SERVED, {"request_id": "never-asked", "label": 1}),
        404,
        "never-asked",
    )
    assert unknown["field"] == "request_id" and unknown["model"] == MODEL
    wrong = assert_refused(
        platform.feedback(EDITOR, SERVED, {"request_id": known, "label": "benign"}),
        422,
        "number",
    )
    assert wrong["field"] == "label"
    for body, status, field in (
        ({"request_id": known, "row": 2, "label": 1}, 422, "row"),
        ({"request_id": known, "labels": [1]}, 422, "labels"),
        ({"request_id": known}, 422, "label"),
        (
            {"feedback": [{"request_id": known, "label": 1}, {"request_id": "x", "label": 1}]},
            404,
            "feedback[1].request_id",
        ),
    ):
        assert assert_refused(platform.feedback(EDITOR, SERVED, body), status)["field"] == field

    with platform.client() as editor:
        with pytest.raises(NotFoundError, match="never-asked"):
            editor.send_feedback(SERVED, "never-asked", 1)
        with pytest.raises(InvalidInputError, match="label must be a number"):
            editor.send_feedback(SERVED, known, "benign")
    written_since_now(platform)  # and the refused requests wrote nothing
    assert labels_in_log(platform, known, "never-asked", "x") == {}


# -- the platform's own refusals --------------------------------------------------------------


def test_a_deployment_without_a_port_is_a_409_saying_where_labels_go(platform: Platform) -> None:
    assert_refused(
        platform.feedback(EDITOR, NO_PORT, {"request_id": "r", "label": 1}),
        409,
        "no port",
        "/feedback",
        "--port",
    )
    with platform.client() as editor, pytest.raises(ConflictError, match="no port"):
        editor.send_feedback(NO_PORT, "r", 1)


def test_a_deployment_whose_server_is_down_is_a_503(platform: Platform) -> None:
    assert not _ready(platform.down_port)
    assert_refused(
        platform.feedback(EDITOR, DOWN, {"request_id": "r", "label": 1}),
        503,
        "not answering",
        str(platform.down_port),
    )
    with platform.client() as editor, pytest.raises(StoreUnavailableError, match="not answering"):
        editor.send_feedback(DOWN, "r", 1)


def test_an_unknown_deployment_is_a_404(platform: Platform) -> None:
    assert_refused(
        platform.feedback(EDITOR, "nowhere", {"request_id": "r", "label": 1}), 404, "nowhere"
    )
    with platform.client() as editor, pytest.raises(NotFoundError, match="nowhere"):
        editor.send_feedback("nowhere", "r", 1)


def test_a_viewer_may_not_send_labels(platform: Platform) -> None:
    known = predict(platform, 1)
    assert_refused(
        platform.feedback(VIEWER, SERVED, {"request_id": known, "label": 1}), 403, "editor"
    )
    with platform.client(VIEWER) as viewer, pytest.raises(PermissionDeniedError):
        viewer.send_feedback(SERVED, known, 1)
    written_since_now(platform)
    assert labels_in_log(platform, known) == {}


def test_a_malformed_body_is_a_422_naming_its_field(platform: Platform) -> None:
    for body, field in (
        ({"request_id": 5, "label": 1}, "request_id"),
        ({"request_id": "r", "row": -1, "label": 1}, "row"),
        ({"request_id": "r", "row": True, "label": 1}, "row"),
        ({"request_id": "r", "lable": 1}, "lable"),
        ({"feedback": []}, "feedback"),
        ({"feedback": [{"label": 1}]}, "feedback.0.request_id"),
    ):
        answer = platform.feedback(EDITOR, SERVED, body)
        assert assert_refused(answer, 422).get("field") == field, answer.text
    mixed = {"request_id": "r", "label": 1, "feedback": [{"request_id": "r", "label": 1}]}
    assert_refused(platform.feedback(EDITOR, SERVED, mixed), 422, "feedback", "alone")
    # Python's JSON parser takes NaN; it is no label, and the answer says so (not a 500)
    with client(platform.url) as http:
        answer = http.post(
            f"{API}/projects/{PROJECT}/deployments/{SERVED}/feedback",
            content=b'{"request_id": "r", "label": NaN}',
            headers={
                "Authorization": f"Bearer {platform.tokens[EDITOR]}",
                "content-type": "application/json",
            },
        )
    assert_refused(answer, 422, "label", "NaN")


# -- the CLI ----------------------------------------------------------------------------------


def _cli(p: Platform, *args: str, role: str = EDITOR) -> subprocess.CompletedProcess[str]:
    environment = {
        **env(p.home),
        "TREADLE_URL": p.url,
        "TREADLE_TOKEN": p.tokens[role],
        "TREADLE_PROJECT": PROJECT,
    }
    return subprocess.run(
        [str(TREADLE), "deployments", "feedback", *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_the_cli_sends_one_label_or_a_file_of_them(platform: Platform, tmp_path: Path) -> None:
    first, second = predict(platform, 2), predict(platform, 1)
    done = _cli(platform, SERVED, "--request-id", first, "--row", "1", "--label", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{SERVED}: 1 label accepted" in done.stdout

    labels = tmp_path / "labels.jsonl"
    lines = [{"request_id": first, "row": 0, "label": 0}, {"request_id": second, "labels": [1]}]
    labels.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    done = _cli(platform, SERVED, "--file", str(labels))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{SERVED}: 2 labels accepted" in done.stdout
    expected = {(first, 0): (0, 1), (first, 1): (1, 1), (second, 0): (1, 1)}
    assert wait_for(lambda: labels_in_log(platform, first, second) == expected, 30)

    # text that is not JSON stays text, which this model's labels cannot be
    done = _cli(platform, SERVED, "--request-id", first, "--label", "yes")
    assert done.returncode == 1 and "label must be a number" in done.stderr, done.stderr
    assert "'yes'" in done.stderr
    # a refused line of a file is named by its line number
    for refused, said in (
        ({"request_id": first, "label": "no"}, "line 2: label must be a number"),
        ({"request_id": "never-asked", "label": 1}, "line 2: no request 'never-asked'"),
    ):
        labels.write_text(json.dumps(lines[0]) + "\n" + json.dumps(refused) + "\n")
        done = _cli(platform, SERVED, "--file", str(labels))
        assert done.returncode == 1 and said in done.stderr, done.stderr
