"""Kubeflow Pipelines pods that record through a treadle server: a real `treadle up` on
127.0.0.1, the pods run as the compiled YAML says (the container argv, an executor input
KFP's own message accepts) in subprocesses with TREADLE_URL and TREADLE_TOKEN, and what
they recorded is read back through the API."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_support import API, Server, free_port, start_server
from test_kfp_entry import Pod, metadata, value

from treadle.client import Client
from treadle.client.external import object_proof
from treadle.errors import PermissionDeniedError
from treadle.store.records import StepRunRecord
from treadle.types import RunState, StepState

pytestmark = pytest.mark.slow

JOB = "7c2e9d41-0000-4000-8000-0000000000a1"

FLOW = """
from treadle import Metrics, log_metric, log_param, pipeline, step


@step
def make(n: int) -> list[int]:
    print(f"making {n} numbers")
    if n < 0:
        raise ValueError("n must not be negative")
    log_param("source", "range")
    return list(range(1, n + 1))


@step
def score(values: list[int]) -> Metrics:
    print("scoring", len(values), "values")
    log_metric("seen", len(values))
    return {"total": float(sum(values))}


@pipeline
def remote_flow(n: int = 3) -> None:
    score(make(n))
"""


class Platform:
    def __init__(self, server: Server, admin: str, viewer: str) -> None:
        self.server, self.admin, self.viewer = server, admin, viewer

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, token: str | None = None) -> Client:
        return Client(self.url, token or self.admin, project="default", trust_env=False)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("kfp-remote")
    server = start_server(root / "home", None, root / "logs")
    try:
        (admin,) = server.printed_tokens()
        headers = {"Authorization": f"Bearer {admin}"}
        with httpx.Client(base_url=server.url + API, headers=headers, trust_env=False) as http:
            assert http.post("/users", json={"name": "watcher"}).status_code == 201
            member = http.put("/projects/default/members/watcher", json={"role": "viewer"})
            assert member.status_code == 200, member.text
            issued = http.post("/users/watcher/tokens", json={"name": "kfp"})
            assert issued.status_code == 201, issued.text
        yield Platform(server, admin, issued.json()["token"])
    finally:
        server.stop()


def pod_env(tmp: Path, url: str, token: str) -> dict[str, str]:
    """A pod's settings: the server to record to, and a database of its own that the
    server's address must win over."""
    return {
        "TREADLE_URL": url,
        "TREADLE_TOKEN": token,
        "TREADLE_PROJECT": "default",
        "TREADLE_HOME": str(tmp / "pod-home"),
        "TREADLE_DB_URL": f"sqlite:///{tmp / 'pod-db.sqlite'}",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "HTTP_PROXY": "",
        "http_proxy": "",
        "HTTPS_PROXY": "",
        "https_proxy": "",
        "ALL_PROXY": "",
        "all_proxy": "",
    }


def flow(tmp: Path) -> str:
    source = tmp / "kfp_remote_flow.py"
    source.write_text(FLOW)
    return f"{source}:remote_flow"


def object_bytes(folder: Path) -> bytes:
    sha = metadata(folder)["sha256"]
    return (folder / "objects" / sha[:2] / sha).read_bytes()


def test_two_pods_record_their_run_through_the_server(platform: Platform, tmp_path: Path) -> None:
    env = pod_env(tmp_path, platform.url, platform.admin)
    pod = Pod(flow(tmp_path), tmp_path, env, job=JOB, job_name="remote-run-1")
    made = pod.ok("make", params={"n": 3})
    scored = pod.ok("score", artifacts={"values": [str(made / "output")]})
    assert value(made / "output") == [1, 2, 3]
    assert value(scored / "output") == {"total": 6.0}

    with platform.client() as client:
        run = client.get_run(metadata(made / "output")["run_id"])
        assert (run.executor, run.name, run.state) == ("kfp", "remote-run-1", RunState.RUNNING)
        assert run.cause is not None and run.cause["external_id"] == JOB
        steps = {s.node: s for s in client.list_steps(run.id)}
        assert sorted(steps) == ["make", "score"]
        assert all(s.state is StepState.SUCCEEDED and s.attempt == 1 for s in steps.values())

        # each output: the bytes KFP hands on, recorded under the id the folder names
        for node, folder in (("make", made), ("score", scored)):
            recorded = client.step_outputs(steps[node].id)["output"]
            data = object_bytes(folder / "output")
            assert recorded.sha256 == hashlib.sha256(data).hexdigest()
            assert recorded.id == metadata(folder / "output")["artifact_id"]
            assert metadata(folder / "output")["step_run_id"] == steps[node].id
            assert client.artifact_bytes(recorded.id) == data
        made_id = client.step_outputs(steps["make"].id)["output"].id
        assert client.step_input_ids(steps["score"].id) == [made_id]
        lineage = client.lineage(made_id)
        assert [e.step_run.node for e in lineage.produced_by] == ["make"]
        assert [(e.step_run.node, e.name) for e in lineage.consumed_by] == [("score", "values")]

        assert client.latest_metrics(run.id) == {"seen": 3.0, "total": 6.0}
        assert client.get_params(run.id) == {"n": "3", "source": "range"}
        logs = client.logs(run.id)
        assert "making 3 numbers" in logs and "scoring 3 values" in logs

        # KFP retries the pod of a step that already succeeded: nothing new is recorded,
        # and the retry's output folder names what the server holds
        again = pod.ok("make", params={"n": 3}, key="make-retry")
        assert len(client.list_steps(run.id)) == 2
        assert len(client.metric_history(run.id, "seen")) == 1
        assert metadata(again / "output")["artifact_id"] == made_id

        # the exit task sets how the KFP run ended, once
        for _ in range(2):
            done, _ = pod.run("treadle_finish_run", params={"status": {"state": "SUCCEEDED"}})
            assert done.returncode == 0, done.stderr
        finished = client.get_run(run.id)
        assert finished.state is RunState.SUCCEEDED and finished.ended_at is not None

    # TREADLE_URL won over TREADLE_DB_URL: the pods' own database holds nothing
    assert not (tmp_path / "pod-db.sqlite").exists()


def test_an_unreachable_server_warns_and_the_step_still_hands_its_output_on(
    tmp_path: Path,
) -> None:
    env = pod_env(tmp_path, f"http://127.0.0.1:{free_port()}", "trd_" + "x" * 40)
    pod = Pod(flow(tmp_path), tmp_path, env, job=JOB + "-offline")
    done, out = pod.run("make", params={"n": 2})
    assert done.returncode == 0, done.stderr
    assert "not recorded on the treadle server" in done.stderr
    assert "cannot reach the treadle server" in done.stderr
    assert "x" * 40 not in done.stderr  # the token stays out of the log
    assert value(out / "output") == [1, 2]
    assert "making 2 numbers" in done.stdout


def test_a_failing_step_is_recorded_failed_and_fails_the_pod(
    platform: Platform, tmp_path: Path
) -> None:
    env = pod_env(tmp_path, platform.url, platform.admin)
    pod = Pod(flow(tmp_path), tmp_path, env, job=JOB + "-failing")
    done, out = pod.run("make", params={"n": -1})
    assert done.returncode == 1
    assert "n must not be negative" in done.stderr
    assert not (out / "output").exists()
    with platform.client() as client:
        (run,) = [r for r in client.list_runs() if (r.cause or {}).get("external_id") == pod.job]
        (step,) = client.list_steps(run.id)
        assert step.state is StepState.FAILED and "ValueError" in (step.error or "")
        assert "making -1 numbers" in client.logs(run.id)
        assert client.step_outputs(step.id) == {}


def test_an_input_the_server_never_heard_of_is_recorded_with_the_step(
    platform: Platform, tmp_path: Path
) -> None:
    """The producer's pod could not reach the server; its consumer can: the artifact it
    read is recorded (without a producer) under the id its folder names."""
    offline = pod_env(tmp_path, f"http://127.0.0.1:{free_port()}", platform.admin)
    made = Pod(flow(tmp_path), tmp_path, offline, job=JOB + "-half").ok("make", params={"n": 4})
    online = pod_env(tmp_path, platform.url, platform.admin)
    pod = Pod(flow(tmp_path), tmp_path, online, job=JOB + "-half")
    pod.ok("score", artifacts={"values": [str(made / "output")]})
    read = metadata(made / "output")["artifact_id"]
    with platform.client() as client:
        artifact = client.get_artifact(read)
        assert artifact.producer_step_run_id is None
        assert client.artifact_bytes(read) == object_bytes(made / "output")
        (consumer,) = client.lineage(read).consumed_by
        assert consumer.step_run.node == "score"
        assert client.latest_metrics(consumer.step_run.run_id) == {"seen": 4.0, "total": 10.0}


def step_body(**changes: Any) -> dict[str, Any]:
    return {"node": "probe", "step_name": "probe", **changes}


def test_malformed_records_are_refused_naming_the_field(platform: Platform) -> None:
    headers = {"Authorization": f"Bearer {platform.admin}"}
    base = f"{platform.url}{API}/projects/default/external"
    with httpx.Client(headers=headers, trust_env=False) as http:
        run = http.post(f"{base}/runs", json={"external_id": "probe-job", "pipeline": "p"})
        assert run.status_code == 200, run.text
        steps = f"{base}/runs/{run.json()['id']}/steps"

        def refused(response: httpx.Response, field: str, status: int = 422) -> str:
            assert response.status_code == status, response.text
            message = str(response.json()["error"])
            assert message.startswith(field), message
            return message

        bad_sha = {"name": "o", "sha256": "not-a-sha", "materializer": "json"}
        refused(http.post(steps, json=step_body(outputs={"o": bad_sha})), "outputs.o.sha256")
        refused(http.post(steps, json=step_body(state="DONE")), "state")
        refused(http.post(steps, json={"step_name": "probe"}), "node")
        refused(http.post(f"{base}/runs", json={"pipeline": "p"}), "external_id")

        # an object nobody uploaded, and one whose proof is wrong, read the same
        data = b'{"probe": 1}'
        sha = hashlib.sha256(data).hexdigest()
        unknown = {"name": "o", "sha256": "0" * 64, "materializer": "json", "proof": "1" * 64}
        first = refused(http.post(steps, json=step_body(outputs={"o": unknown})), "outputs.o")
        wrong = http.post(
            f"{base}/objects?sha256={'2' * 64}",
            content=data,
            headers={"content-type": "application/octet-stream"},
        )
        assert "the body hashes to" in refused(wrong, "sha256")
        uploaded = http.post(
            f"{base}/objects?sha256={sha}",
            content=data,
            headers={"content-type": "application/octet-stream"},
        )
        assert uploaded.json() == {"sha256": sha, "size": len(data)}
        forged = {**unknown, "sha256": sha}
        second = refused(http.post(steps, json=step_body(outputs={"o": forged})), "outputs.o")
        assert first.replace("0" * 12, sha[:12]) == second
        # no step run was written by any of them
        listed = http.get(f"{platform.url}{API}/projects/default/runs/{run.json()['id']}/steps")
        assert listed.json() == []
        as_json = http.post(f"{base}/objects?sha256={sha}", json={"data": "x"})
        assert as_json.status_code == 415, as_json.text

        # one artifact read under two names, new to the project: recorded once, proven
        run_id = run.json()["id"]
        read = {**forged, "id": "cd" * 16, "proof": object_proof(run_id, data)}
        both = http.post(steps, json=step_body(inputs={"a": [read], "b": [read]}))
        assert both.status_code == 200, both.text
        inputs = http.get(
            f"{platform.url}{API}/projects/default/step-runs/{both.json()['id']}/inputs"
        )
        assert inputs.json() == ["cd" * 16] * 2  # one edge per input name

        # a step run sent twice under one id is recorded once
        step_id = "ab" * 16
        sent = step_body(id=step_id, node="sent-twice", log="hello\n")
        once, twice = http.post(steps, json=sent), http.post(steps, json=sent)
        assert once.status_code == twice.status_code == 200, twice.text
        assert once.json() == twice.json() and once.json()["id"] == step_id


def test_a_viewer_token_is_refused_with_403(platform: Platform) -> None:
    with platform.client() as admin:
        run = admin.external_run("viewer-job", "p")
    with platform.client(platform.viewer) as viewer:
        attempts = (
            lambda: viewer.external_run("viewer-job-2", "p"),
            lambda: viewer.upload_object(b"x"),
            lambda: viewer.record_step(
                run.id, StepRunRecord("c" * 32, run.id, "", "n", "n", 1, StepState.SUCCEEDED, 1.0)
            ),
            lambda: viewer.finish_external_run(run.id, RunState.SUCCEEDED),
        )
        for attempt in attempts:
            with pytest.raises(PermissionDeniedError, match="editor"):
                attempt()
        assert viewer.list_steps(run.id) == []
