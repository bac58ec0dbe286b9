"""Monitors, policies and the closed loop on a real `treadle up`, over real HTTP.

One seeded server for the module (api_support's platform, SQLite: project `alpha` with a
viewer, an editor and an owner, `beta-owner` outside it, and the deployment `sec-svc`).
Monitors and policies are made and refused through the Client; then the example loop
pipeline (examples/loop/pipeline.py) is deployed as a package, trained, and its model
served by the server's deployment controller on a port of its own. Requests and labels
go to that model server; the server's own monitoring loop closes the windows and its
policy runner retrains, gates, canaries and promotes — the loop `treadle demo` shows,
with `treadle.cli.demo`'s simulated world and traffic, smaller windows and a shorter
canary, seeded.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_support import (
    BETA_OWNER,
    EDITOR,
    REPO,
    TREADLE,
    VIEWER,
    Platform,
    env,
    free_port,
    started_platform,
)

import treadle
from treadle.cli.demo import Traffic, World
from treadle.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from treadle.loop.policy import load_text
from treadle.types import RunState

pytestmark = pytest.mark.slow

PROJECT = "alpha"
SEEDED_MODEL, SEEDED_DEPLOYMENT, SEEDED_PIPELINE = "sec-model", "sec-svc", "seed_flow"
LOOP_PIPELINE = REPO / "examples" / "loop" / "pipeline.py"
LOOP_POLICY = REPO / "examples" / "loop" / "policy.yaml"
# the names examples/loop/policy.yaml acts on
MODEL, DEPLOYMENT, MONITOR = "tumor-classifier", "tumor-api", "tumor-watch"
SEED = 7


@pytest.fixture(scope="module", params=[pytest.param("sqlite", id="sqlite")])
def platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    with started_platform(request, tmp_path_factory, "loop") as p:
        yield p


def client_of(p: Platform, role: str = EDITOR) -> treadle.Client:
    return treadle.Client(p.url, p.tokens[role], project=PROJECT, trust_env=False)


@pytest.fixture
def editor(platform: Platform) -> Iterator[treadle.Client]:
    with client_of(platform) as c:
        yield c


def unique(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:6]}"


def eventually(probe: Callable[[], Any], seconds: float, what: str, every: float = 0.1) -> Any:
    """The first truthy answer of `probe`, polled until `seconds` pass."""
    deadline = time.monotonic() + seconds
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(every)


# -- monitors and policies through the Client ---------------------------------------------


def test_monitors_are_made_read_and_deleted_by_role(
    platform: Platform, editor: treadle.Client
) -> None:
    name = unique("watch")
    with client_of(platform, VIEWER) as viewer, client_of(platform, BETA_OWNER) as outsider:
        with pytest.raises(PermissionDeniedError):
            viewer.create_monitor(name, SEEDED_DEPLOYMENT)
        with pytest.raises(NotFoundError):
            outsider.create_monitor(name, SEEDED_DEPLOYMENT)

        made = editor.create_monitor(
            name,
            SEEDED_DEPLOYMENT,
            window_kind="seconds",
            window_size=30,
            thresholds={"ks": 0.2, "label_wait": 2},
            rules=["drift: drift_share > 0.3 for 2 windows", "accuracy < 0.8"],
        )
        assert (made.deployment, made.window_kind, made.window_size) == (
            SEEDED_DEPLOYMENT,
            "seconds",
            30,
        )
        assert made.thresholds == {"ks": 0.2, "label_wait": 2.0}
        assert made.state == "waiting" and made.created_by == EDITOR

        assert viewer.get_monitor(name) == made
        assert name in [m.name for m in viewer.list_monitors()]
        assert viewer.monitor_windows(name) == [] and viewer.list_alerts(name) == []
        with pytest.raises(NotFoundError):
            outsider.get_monitor(name)
        with pytest.raises(NotFoundError):
            outsider.monitor_windows(name)
        with pytest.raises(PermissionDeniedError):
            viewer.delete_monitor(name)

        with pytest.raises(InvalidInputError) as refused:
            editor.create_monitor(unique("watch"), SEEDED_DEPLOYMENT, rules=["drift_share >> 1"])
        assert refused.value.message.startswith("rules:")
        with pytest.raises(InvalidInputError, match="thresholds: 'kss'"):
            editor.create_monitor(unique("watch"), SEEDED_DEPLOYMENT, thresholds={"kss": 0.1})
        with pytest.raises(NotFoundError, match="no deployment named 'nowhere'"):
            editor.create_monitor(unique("watch"), "nowhere")
        with pytest.raises(ConflictError):
            editor.create_monitor(name, SEEDED_DEPLOYMENT)

        editor.delete_monitor(name)
        with pytest.raises(NotFoundError):
            viewer.get_monitor(name)


def test_a_bad_monitor_body_is_a_422_naming_its_field(platform: Platform) -> None:
    path = f"/api/v1/projects/{PROJECT}/monitors"
    body = {"name": unique("watch"), "deployment": SEEDED_DEPLOYMENT}
    for extra, field in (
        ({"rules": ["nope"]}, "rules"),
        ({"window_size": 0}, "window_size"),
        ({"window_kind": "days"}, "window_kind"),
    ):
        answer = platform.call(EDITOR, "POST", path, json={**body, **extra})
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"].startswith(f"{field}"), answer.text


def _seeded_policy(name: str) -> dict[str, Any]:
    """A policy on the seeded pipeline, model and deployment, for no monitor that exists."""
    return {
        "name": name,
        "on": {"where": {"monitor": "no-such-monitor"}},
        "run": {"pipeline": SEEDED_PIPELINE, "params": {"n": 3}},
        "register": {"model": SEEDED_MODEL, "require": ["loss <= 0.2"]},
        "canary": {"deployment": SEEDED_DEPLOYMENT, "percent": 20, "requests": 50},
        "promote": {"metric": "accuracy"},
    }


def test_policies_are_made_changed_and_deleted_by_role(
    platform: Platform, editor: treadle.Client
) -> None:
    name = unique("policy")
    spec = _seeded_policy(name)
    with client_of(platform, VIEWER) as viewer, client_of(platform, BETA_OWNER) as outsider:
        with pytest.raises(PermissionDeniedError):
            viewer.put_policy(spec)
        with pytest.raises(NotFoundError):
            outsider.put_policy(spec)

        made = editor.put_policy(spec)
        assert (made.name, made.enabled, made.created_by) == (name, True, EDITOR)
        assert made.spec == spec
        assert viewer.get_policy(name) == made
        assert name in [p.name for p in viewer.list_policies()]
        assert viewer.policy_runs(name) == []
        with pytest.raises(NotFoundError):
            outsider.get_policy(name)

        with pytest.raises(ConflictError):
            editor.put_policy(spec)
        changed = editor.put_policy(
            {**spec, "canary": {**spec["canary"], "percent": 5}}, replace=True
        )
        assert changed.id == made.id and changed.spec["canary"]["percent"] == 5
        with pytest.raises(PermissionDeniedError):
            viewer.set_policy_enabled(name, False)
        assert not editor.set_policy_enabled(name, False).enabled
        assert editor.set_policy_enabled(name, True).enabled

        for broken, said in (
            ({**spec, "retry": 3}, "'retry' is not a policy section"),
            ({**spec, "canary": None}, "needs a canary section"),
            ({**spec, "promote": {"metric": "latency"}}, "promote.metric"),
            ({**spec, "register": {"model": SEEDED_MODEL, "require": ["loss <"]}}, "loss <"),
        ):
            with pytest.raises(InvalidInputError) as refused:
                editor.put_policy({**broken, "name": unique("broken")})
            assert said in refused.value.message
        with pytest.raises(NotFoundError):
            editor.put_policy({**spec, "name": unique("p"), "run": {"pipeline": "no-such"}})
        with pytest.raises(NotFoundError, match="no deployment named 'nowhere'"):
            editor.put_policy({**spec, "name": unique("p"), "canary": {"deployment": "nowhere"}})

        with pytest.raises(PermissionDeniedError):
            viewer.delete_policy(name)
        editor.delete_policy(name)
        with pytest.raises(NotFoundError):
            viewer.get_policy(name)


# -- a served deployment, its feedback, and the loop --------------------------------------


def _package(path: Path) -> tuple[str, bytes]:
    from treadle.engine import find_pipeline
    from treadle.packaging import build_package

    found, source = find_pipeline(str(path))
    return found.name, build_package(found, source or str(path)).data


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v2/health/ready", timeout=1, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def served(platform: Platform) -> str:
    """The example loop pipeline deployed, trained once, and its model (the champion)
    served by the server's controller; the model server's URL."""
    with client_of(platform) as editor:
        pipeline, data = _package(LOOP_PIPELINE)
        editor.deploy_package(data)
        run = editor.submit_run(pipeline, {})
        done = eventually(
            lambda: (r := editor.get_run(run.id)).state.finished and r, 60, "the first training"
        )
        assert done.state is RunState.SUCCEEDED, done.error
        (version,) = editor.list_versions(MODEL)
        editor.set_alias(MODEL, "champion", version.version)
        port = free_port()
        editor.deploy(f"{MODEL}@champion", DEPLOYMENT, port=port)
    url = f"http://127.0.0.1:{port}"
    eventually(lambda: _ready(url), 60, "the model server", every=0.2)
    return url


def test_predictions_take_labels_through_feedback(served: str) -> None:
    world = World(seed=1)
    with httpx.Client(base_url=served, timeout=10, trust_env=False) as http:
        rows = [world.sample() for _ in range(3)]
        answer = http.post("/predict", json={"rows": [r for r, _ in rows]})
        assert answer.status_code == 200, answer.text
        request_id = answer.json()["request_id"]
        assert len(answer.json()["predictions"]) == 3
        one = http.post("/predict", json={"rows": [rows[0][0]]}, headers={"x-request-id": "mine"})
        assert one.status_code == 200 and one.json()["request_id"] == "mine"

        labels = [label for _, label in rows]
        accepted = http.post("/feedback", json={"request_id": request_id, "labels": labels})
        assert (accepted.status_code, accepted.json()) == (202, {"accepted": 3})
        single = http.post("/feedback", json={"request_id": "mine", "label": labels[0]})
        assert (single.status_code, single.json()) == (202, {"accepted": 1})
        batch = {"feedback": [{"request_id": request_id, "row": 2, "label": labels[2]}]}
        assert http.post("/feedback", json=batch).json() == {"accepted": 1}

        unknown = http.post("/feedback", json={"request_id": "never-asked", "label": 1})
        assert unknown.status_code == 404, unknown.text
        assert unknown.json()["field"] == "request_id"
        assert "never-asked" in unknown.json()["error"]
        wrong = http.post("/feedback", json={"request_id": "mine", "label": "benign"})
        assert wrong.status_code == 422, wrong.text
        assert wrong.json()["field"] == "label" and "number" in wrong.json()["error"]
        short = http.post("/feedback", json={"request_id": request_id, "labels": [1]})
        assert (short.status_code, short.json()["field"]) == (422, "labels")
        row = http.post("/feedback", json={"request_id": request_id, "row": 3, "label": 1})
        assert (row.status_code, row.json()["field"]) == (422, "row")
        later = {"feedback": [{"request_id": "mine", "label": 1}, {"request_id": "x", "label": 1}]}
        refused = http.post("/feedback", json=later)
        assert (refused.status_code, refused.json()["field"]) == (404, "feedback[1].request_id")


def test_a_refused_first_item_of_a_feedback_list_is_named_by_its_index(served: str) -> None:
    body = {"feedback": [{"request_id": "never-asked", "label": 1}]}
    answer = httpx.post(f"{served}/feedback", json=body, timeout=10, trust_env=False)
    assert answer.status_code == 404
    assert answer.json()["field"] == "feedback[0].request_id"


def _treadle(platform: Platform, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **env(platform.home, None),
        "TREADLE_URL": platform.url,
        "TREADLE_TOKEN": platform.tokens[VIEWER],
        "TREADLE_PROJECT": PROJECT,
    }
    done = subprocess.run(
        [str(TREADLE), *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"treadle {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done


def test_the_closed_loop_drift_retrain_gate_canary_promote(
    platform: Platform, served: str, tmp_path: Path
) -> None:
    """`treadle demo` in short: the world shifts, the monitor alerts, the policy retrains
    on the labelled live data, gates the new model, canaries it and promotes it."""
    editor = client_of(platform)
    viewer = client_of(platform, VIEWER)
    traffic: Traffic | None = None
    try:
        editor.create_monitor(
            MONITOR,
            DEPLOYMENT,
            window_size=60,
            thresholds={"label_wait": 0.5},
            rules=["drift: drift_share > 0.3 for 2 windows", "accuracy: accuracy < 0.8"],
        )
        spec = load_text(LOOP_POLICY.read_text())
        spec["canary"] = {**spec["canary"], "percent": 50, "requests": 60, "timeout": 60}
        editor.put_policy(spec)
        champion = editor.get_alias(MODEL, "champion").version

        world = World(SEED)
        traffic = Traffic(served, world, rate=150)
        traffic.start()
        calm = eventually(
            lambda: w if len(w := viewer.monitor_windows(MONITOR)) >= 2 else None,
            30,
            "two windows of the world as it was",
        )
        for window in calm:
            metrics = window.stats["metrics"]
            assert window.rows == 60 and window.stats["versions"] == {str(champion): 60}
            assert metrics["drift_share"] <= 0.3, window.stats["drift"]["drifted"]
            assert metrics["labelled"] > 0 and metrics["accuracy"] > 0.8
            assert metrics["p99_ms"] is not None
        assert viewer.list_alerts(MONITOR) == []

        world.shifted = True
        alert = eventually(
            lambda: next((a for a in viewer.list_alerts(MONITOR) if a.name == "drift"), None),
            30,
            "the drift alert",
        )
        assert alert.rule == "drift: drift_share > 0.3 for 2 windows" and alert.event_id
        fired = next(w for w in viewer.monitor_windows(MONITOR) if w.seq == alert.fired_seq)
        assert set(fired.stats["drift"]["drifted"]) >= {world.columns[j] for j in world.shift}

        done = eventually(
            lambda: next(
                (r for r in viewer.policy_runs(spec["name"]) if r.state != "running"), None
            ),
            60,
            "the policy run to finish",
            every=0.5,
        )
        steps = [(s["step"], s["status"]) for s in done.steps]
        assert done.state == "promoted", done.steps
        assert steps == [
            ("event", "seen"),
            ("run", "started"),
            ("run", "succeeded"),
            ("register", "passed"),
            ("canary", "started"),
            ("promote", "done"),
        ]
        assert done.steps[0]["event"] == alert.event_id
        new = done.context["version"]
        assert new > champion and editor.get_alias(MODEL, "champion").version == new
        retrained = editor.get_params(done.context["run_id"])
        assert retrained["deployment"] == DEPLOYMENT
        assert float(retrained["since"]) == pytest.approx(fired.start_ts)
        revision = editor.list_revisions(DEPLOYMENT)[-1]
        assert [(t["version"], t["role"]) for t in revision.targets] == [(new, "primary")]
        assert editor.get_deployment(DEPLOYMENT).spec["policy"] == "single"
        traffic.stop()
        traffic = None

        windows = _treadle(platform, "monitor", "windows", MONITOR, "--limit", "5").stdout
        assert "drift share" in windows and "60" in windows
        alerts = _treadle(platform, "monitor", "alerts", MONITOR).stdout
        assert "drift_share > 0.3" in alerts
        report = tmp_path / "report.html"
        said = _treadle(platform, "monitor", "report", MONITOR, "--html", str(report)).stdout
        assert "wrote" in said
        page = report.read_text()
        assert "<svg" in page and MONITOR in page
        runs = _treadle(platform, "policies", "runs", spec["name"]).stdout
        assert "promoted" in runs
    finally:
        if traffic is not None:
            traffic.stop()
        editor.close()
        viewer.close()
