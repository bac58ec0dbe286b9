"""Schedules, triggers and webhooks on a real `treadle up`, over real HTTP.

One seeded server per backend for the module (api_support's platform: project `alpha`
with a viewer, an editor and an owner; `beta-owner` outside it). A package of one small
pipeline, `auto_flow`, is deployed to alpha; the server's scheduler (every 0.2 s) and
trigger dispatcher (every 0.25 s) start its runs. Cron's sixth field (seconds) lets a
schedule fire within a second or two. Each test deletes the schedules and triggers it
made, and tells its own runs from the others' by their recorded cause.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import itertools
import json
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_support import (
    ADMIN,
    ANONYMOUS,
    API,
    BACKENDS,
    BETA_OWNER,
    EDITOR,
    OWNER,
    VIEWER,
    Platform,
    error_of,
    started_platform,
)

import treadle
from treadle.errors import NotFoundError
from treadle.store.records import RunRecord, ScheduleFireRecord
from treadle.types import RunState

pytestmark = pytest.mark.slow

PROJECT = "alpha"
IN_ALPHA = f"{API}/projects/{PROJECT}"
PIPELINE = "auto_flow"
FINISHED_SECONDS = 60.0

AUTO_FLOW = """
import time

from treadle import log_metric, pipeline, step


@step(cache=False)
def work(x: int, tag: str, pause: float, fail: bool) -> int:
    if fail:
        raise RuntimeError("failing on purpose")
    time.sleep(pause)
    log_metric("x", x)
    return x


@pipeline
def auto_flow(x: int = 1, tag: str = "", pause: float = 0.0, fail: bool = False) -> None:
    work(x, tag, pause, fail)
"""


def package(text: str) -> bytes:
    """A real package of the pipeline in `text`, built as `treadle pipeline build` does."""
    from treadle.engine import find_pipeline
    from treadle.packaging import build_package

    folder = Path(tempfile.mkdtemp(prefix="automation-package-"))
    (folder / "auto_flow.py").write_text(text)
    found, source = find_pipeline(str(folder / "auto_flow.py"))
    assert source is not None
    return build_package(found, source).data


@pytest.fixture(scope="module", params=BACKENDS)
def platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    with started_platform(request, tmp_path_factory, "automation") as p:
        with client_of(p, EDITOR) as editor:
            editor.deploy_package(package(AUTO_FLOW))
        yield p


def client_of(p: Platform, role: str = EDITOR) -> treadle.Client:
    return treadle.Client(p.url, p.tokens[role], project=PROJECT, trust_env=False)


@pytest.fixture
def client(platform: Platform) -> Iterator[treadle.Client]:
    with client_of(platform) as c:
        yield c


def eventually(probe: Callable[[], Any], seconds: float, what: str) -> Any:
    """The first truthy answer of `probe`, polled until `seconds` pass."""
    deadline = time.monotonic() + seconds
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.1)


def finished(client: treadle.Client, run_id: str) -> RunRecord:
    run: RunRecord = eventually(
        lambda: (found := client.get_run(run_id)).state.finished and found,
        FINISHED_SECONDS,
        f"run {run_id} finished",
    )
    return run


def caused_by(client: treadle.Client, key: str, value: str) -> list[RunRecord]:
    """The project's runs whose cause has `key` = `value`, oldest first."""
    runs = client.list_runs(limit=1000)
    return sorted(
        (r for r in runs if (r.cause or {}).get(key) == value), key=lambda r: r.created_at
    )


def unique(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:6]}"


# -- webhooks -----------------------------------------------------------------------------


def signed(secret: str, body: bytes, stamp: float | None = None) -> dict[str, str]:
    """The headers of a delivery signed as a sender would, written here from the spec
    (HMAC-SHA256 of `TIMESTAMP.BODY`), not with treadle's own helper."""
    timestamp = str(int(time.time() if stamp is None else stamp))
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return {
        "content-type": "application/json",
        "X-Treadle-Timestamp": timestamp,
        "X-Treadle-Signature": f"sha256={digest.hexdigest()}",
    }


def deliver(p: Platform, hook: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    """A delivery with no token, as a source-control host or a CI system sends it."""
    return p.call(ANONYMOUS, "POST", hook, content=body, headers=headers)


@pytest.fixture
def webhook(client: treadle.Client) -> Iterator[tuple[str, str, str]]:
    """(name, hook path, secret) of a webhook trigger taking x and tag from the payload."""
    name = unique("hook")
    made = client.create_trigger(
        name,
        "webhook",
        PIPELINE,
        params={"x": "$event.build.number", "tag": "$event.ref"},
    )
    assert made.secret is not None and made.hook is not None
    yield name, made.hook, made.secret
    client.delete_trigger(name)


def test_a_signed_webhook_starts_a_run_whose_params_and_why_come_from_the_payload(
    platform: Platform, client: treadle.Client, webhook: tuple[str, str, str]
) -> None:
    name, hook, secret = webhook
    trigger = client.get_trigger(name)
    assert hook == f"{API}/hooks/{trigger.id}"
    assert secret.startswith("whsec_") and len(secret) > 30
    assert trigger.has_secret and trigger.enabled
    # the secret was shown once: no read of the trigger gives it again
    for path in (f"{IN_ALPHA}/triggers/{name}", f"{IN_ALPHA}/triggers"):
        assert secret not in platform.call(OWNER, "GET", path).text

    payload = {"ref": "main", "build": {"number": 7}, "sender": "ci"}
    body = json.dumps(payload).encode()
    answer = deliver(platform, hook, body, signed(secret, body))
    assert answer.status_code == 202, answer.text
    fire = answer.json()
    assert fire["trigger"] == name and fire["outcome"] == "started", fire
    assert fire["event"]["kind"] == "webhook" and fire["event"]["payload"] == payload

    run = finished(client, fire["run_id"])
    assert run.state is RunState.SUCCEEDED, run.error
    params = client.get_params(run.id)
    assert (params["x"], params["tag"]) == ("7", "main")
    assert client.latest_metrics(run.id) == {"x": 7.0}

    why = client.why(run.id)
    assert why.cause["kind"] == "webhook"
    assert why.cause["trigger"] == name and why.cause["trigger_id"] == trigger.id
    assert why.cause["event"] == payload
    assert why.event is not None and why.event.id == fire["event"]["id"]
    assert why.event.payload == payload
    assert f"trigger {name!r} acted on a webhook event" in why.summary
    assert '"ref": "main"' in why.summary and '"number": 7' in why.summary

    [fired] = client.trigger_fires(name)
    assert (fired.run_id, fired.outcome, fired.event_id) == (run.id, "started", why.event.id)
    assert why.event.id in {e.id for e in client.list_events(kind="webhook")}


def test_a_payload_without_the_field_a_param_needs_starts_nothing_and_says_why(
    platform: Platform, client: treadle.Client, webhook: tuple[str, str, str]
) -> None:
    name, hook, secret = webhook
    body = json.dumps({"ref": "main"}).encode()  # no build.number for x
    answer = deliver(platform, hook, body, signed(secret, body))
    assert answer.status_code == 202, answer.text
    fire = answer.json()
    assert fire["run_id"] is None
    assert fire["outcome"].startswith("failed to start:"), fire
    assert "'build.number'" in fire["outcome"] and "'x'" in fire["outcome"]
    assert caused_by(client, "trigger", name) == []
    [fired] = client.trigger_fires(name)
    assert fired.run_id is None and fired.outcome == fire["outcome"]


def test_unsigned_badly_signed_or_old_deliveries_are_401_and_start_nothing(
    platform: Platform, client: treadle.Client, webhook: tuple[str, str, str]
) -> None:
    name, hook, secret = webhook
    body = json.dumps({"ref": "main", "build": {"number": 1}}).encode()
    good = signed(secret, body)
    events_before = {e.id for e in client.list_events(kind="webhook", limit=1000)}
    now = time.time()
    attempts: dict[str, tuple[str, bytes, dict[str, str]]] = {
        "no headers": (hook, body, {"content-type": "application/json"}),
        "no signature": (hook, body, {k: v for k, v in good.items() if "Signature" not in k}),
        "no timestamp": (hook, body, {k: v for k, v in good.items() if "Timestamp" not in k}),
        "a made-up signature": (hook, body, {**good, "X-Treadle-Signature": "sha256=" + "0" * 64}),
        "the signature without its prefix": (
            hook,
            body,
            {**good, "X-Treadle-Signature": good["X-Treadle-Signature"].removeprefix("sha256=")},
        ),
        "another secret": (hook, body, signed("whsec_" + "x" * 43, body)),
        "a body changed after signing": (hook, body.replace(b"1", b"2"), good),
        "a timestamp changed after signing": (
            hook,
            body,
            {**good, "X-Treadle-Timestamp": str(int(good["X-Treadle-Timestamp"]) + 1)},
        ),
        "a timestamp that is not a number": (hook, body, {**good, "X-Treadle-Timestamp": "soon"}),
        "a ten-minute-old timestamp": (hook, body, signed(secret, body, now - 600)),
        "a timestamp ten minutes ahead": (hook, body, signed(secret, body, now + 600)),
        "a trigger id nobody has": (f"{API}/hooks/{uuid.uuid4().hex}", body, good),
        "a trigger id that is not a webhook's": (
            f"{API}/hooks/{platform.values['trigger_id']}",
            body,
            good,
        ),
    }
    for what, (path, sent, headers) in attempts.items():
        answer = deliver(platform, path, sent, headers)
        assert answer.status_code == 401, f"{what}: {answer.status_code} {answer.text}"
        message = error_of(answer)
        assert secret not in answer.text, what
        if "timestamp" in what and "ten" in what:
            assert "timestamp" in message and "away from the server's clock" in message, what

    assert client.trigger_fires(name) == []
    assert caused_by(client, "trigger", name) == []
    assert {e.id for e in client.list_events(kind="webhook", limit=1000)} == events_before
    # the trigger still takes a good delivery afterwards
    answer = deliver(platform, hook, body, good)
    assert answer.status_code == 202 and answer.json()["outcome"] == "started", answer.text


def test_an_unknown_trigger_id_is_answered_as_a_bad_signature_is(
    platform: Platform, webhook: tuple[str, str, str]
) -> None:
    _, hook, secret = webhook
    body = b"{}"
    bad = {**signed(secret, body), "X-Treadle-Signature": "sha256=" + "0" * 64}
    unknown = deliver(platform, f"{API}/hooks/{uuid.uuid4().hex}", body, bad)
    known = deliver(platform, hook, body, bad)
    assert (unknown.status_code, known.status_code) == (401, 401)
    assert unknown.json() == known.json()


def test_the_same_delivery_twice_is_409_and_starts_one_run(
    platform: Platform, client: treadle.Client, webhook: tuple[str, str, str]
) -> None:
    name, hook, secret = webhook
    body = json.dumps({"ref": "replay", "build": {"number": 3}}).encode()
    headers = signed(secret, body)
    first = deliver(platform, hook, body, headers)
    assert first.status_code == 202, first.text
    again = deliver(platform, hook, body, headers)
    assert again.status_code == 409, again.text
    assert "received before" in error_of(again)
    [run] = caused_by(client, "trigger", name)
    assert run.id == first.json()["run_id"]
    assert len(client.trigger_fires(name)) == 1
    # the same payload signed afresh (a new timestamp) is a new delivery
    time.sleep(1.05)
    fresh = deliver(platform, hook, body, signed(secret, body))
    assert fresh.status_code == 202 and fresh.json()["outcome"] == "started", fresh.text
    assert len(caused_by(client, "trigger", name)) == 2
    finished(client, fresh.json()["run_id"])


def test_a_disabled_trigger_refuses_deliveries_with_409(
    platform: Platform, client: treadle.Client, webhook: tuple[str, str, str]
) -> None:
    name, hook, secret = webhook
    assert client.set_trigger_enabled(name, False).enabled is False
    body = json.dumps({"ref": "off", "build": {"number": 4}}).encode()
    answer = deliver(platform, hook, body, signed(secret, body))
    assert answer.status_code == 409, answer.text
    assert "disabled" in error_of(answer)
    assert caused_by(client, "trigger", name) == []
    assert client.trigger_fires(name) == []
    # a viewer may not switch it back on
    refused = platform.call(
        VIEWER, "PUT", f"{IN_ALPHA}/triggers/{name}/enabled", json={"enabled": True}
    )
    assert refused.status_code == 403, refused.text
    assert client.get_trigger(name).enabled is False

    assert client.set_trigger_enabled(name, True).enabled is True
    body = json.dumps({"ref": "on", "build": {"number": 5}}).encode()
    answer = deliver(platform, hook, body, signed(secret, body))
    assert answer.status_code == 202 and answer.json()["outcome"] == "started", answer.text
    [run] = caused_by(client, "trigger", name)
    assert client.get_params(run.id)["tag"] == "on"


# -- what a trigger or schedule may name --------------------------------------------------


def test_a_trigger_or_schedule_naming_a_missing_pipeline_is_404_and_creates_nothing(
    platform: Platform,
) -> None:
    before = platform.counts()
    for noun, body in (
        ("triggers", {"name": unique("nope"), "kind": "webhook", "pipeline": "no-such-flow"}),
        ("schedules", {"name": unique("nope"), "pipeline": "no-such-flow", "cron": "0 3 * * *"}),
    ):
        answer = platform.call(EDITOR, "POST", f"{IN_ALPHA}/{noun}", json=body)
        assert answer.status_code == 404, answer.text
        message = error_of(answer)
        assert "no pipeline named 'no-such-flow'" in message, message
        assert "deploy" in answer.json().get("hint", "")
    after = platform.counts()
    for table in ("triggers", "schedules", "audit_events", "events"):
        assert after[table] == before[table], table
    names = {t.name for t in client_of(platform).list_triggers()}
    assert not any(n.startswith("nope-") for n in names)


@pytest.mark.parametrize(
    ("cron", "timezone", "field"),
    [
        ("not a cron", "UTC", "cron"),
        ("* * *", "UTC", "cron"),
        ("61 * * * *", "UTC", "cron"),
        ("* * * * * * *", "UTC", "cron"),
        ("", "UTC", "cron"),
        ("0 3 * * *", "Mars/Olympus_Mons", "timezone"),
        ("0 3 * * *", "../../../etc/passwd", "timezone"),
        ("0 3 * * *", "", "timezone"),
    ],
)
def test_an_invalid_cron_or_time_zone_is_422_naming_which(
    platform: Platform, cron: str, timezone: str, field: str
) -> None:
    name = unique("bad")
    body = {"name": name, "pipeline": PIPELINE, "cron": cron, "timezone": timezone}
    answer = platform.call(EDITOR, "POST", f"{IN_ALPHA}/schedules", json=body)
    assert answer.status_code == 422, answer.text
    message = error_of(answer)
    assert message.startswith(f"{field}:"), message
    missing = platform.call(EDITOR, "GET", f"{IN_ALPHA}/schedules/{name}")
    assert missing.status_code == 404, missing.text


def test_a_bad_concurrency_or_catchup_policy_is_422_naming_it(platform: Platform) -> None:
    for field, value in (("concurrency", "sometimes"), ("catchup", "never")):
        body = {"name": unique("bad"), "pipeline": PIPELINE, "cron": "0 3 * * *", field: value}
        answer = platform.call(EDITOR, "POST", f"{IN_ALPHA}/schedules", json=body)
        assert answer.status_code == 422, answer.text
        assert error_of(answer).startswith(f"{field}:"), answer.text


# -- roles --------------------------------------------------------------------------------


def test_a_viewer_cannot_create_or_change_automation_and_another_project_sees_404(
    platform: Platform,
) -> None:
    before = platform.counts()
    schedule = {"name": unique("v"), "pipeline": PIPELINE, "cron": "0 3 * * *"}
    trigger = {"name": unique("v"), "kind": "manual", "pipeline": PIPELINE}
    seeded_schedule, seeded_trigger = platform.values["schedule"], platform.values["trigger"]
    run = platform.values["run"]
    writes: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", f"{IN_ALPHA}/schedules", schedule),
        ("POST", f"{IN_ALPHA}/triggers", trigger),
        ("POST", f"{IN_ALPHA}/schedules/{seeded_schedule}/pause", None),
        ("DELETE", f"{IN_ALPHA}/schedules/{seeded_schedule}", None),
        ("POST", f"{IN_ALPHA}/triggers/{seeded_trigger}/fire", {"payload": {}}),
        ("DELETE", f"{IN_ALPHA}/triggers/{seeded_trigger}", None),
    ]
    reads = [
        f"{IN_ALPHA}/schedules",
        f"{IN_ALPHA}/schedules/{seeded_schedule}",
        f"{IN_ALPHA}/schedules/{seeded_schedule}/fires",
        f"{IN_ALPHA}/triggers",
        f"{IN_ALPHA}/triggers/{seeded_trigger}/fires",
        f"{IN_ALPHA}/events",
        f"{IN_ALPHA}/runs/{run}/why",
    ]
    for method, path, body in writes:
        for role, status in ((ANONYMOUS, 401), (VIEWER, 403), (BETA_OWNER, 404)):
            answer = platform.call(role, method, path, json=body)
            assert answer.status_code == status, f"{role} {method} {path}: {answer.text}"
            error_of(answer)
    for path in reads:
        assert platform.call(VIEWER, "GET", path).status_code == 200, path
        answer = platform.call(BETA_OWNER, "GET", path)
        assert answer.status_code == 404, f"beta-owner GET {path}: {answer.text}"
        error_of(answer)
    # beta's owner cannot reach alpha's pipeline from beta either
    answer = platform.call(
        BETA_OWNER, "POST", f"{API}/projects/beta/schedules", json={**schedule, "name": "b"}
    )
    assert answer.status_code == 404 and "no pipeline named" in error_of(answer), answer.text
    after = platform.counts()
    for table in ("triggers", "schedules", "trigger_fires", "schedule_fires", "runs", "events"):
        assert after[table] == before[table], table
    assert (
        platform.call(ADMIN, "GET", f"{IN_ALPHA}/schedules/{seeded_schedule}").json()["paused"]
        is False
    )


# -- schedules ----------------------------------------------------------------------------


def started_fires(client: treadle.Client, name: str) -> list[ScheduleFireRecord]:
    """The schedule's fires that started a run, oldest first."""
    fires = client.schedule_fires(name, limit=1000)
    return sorted((f for f in fires if f.outcome == "started"), key=lambda f: f.due_at)


def test_a_seconds_schedule_fires_within_seconds_and_each_run_says_why(
    client: treadle.Client,
) -> None:
    name = unique("every-2s")
    made = client.create_schedule(name, PIPELINE, "* * * * * */2", params={"tag": "every-2s"})
    try:
        assert (made.cron, made.timezone, made.paused) == ("* * * * * */2", "UTC", False)
        assert name in {s.name for s in client.list_schedules()}
        fires: list[ScheduleFireRecord] = eventually(
            lambda: (found := started_fires(client, name)) and len(found) >= 2 and found,
            10,
            f"two fires of {name}",
        )
    finally:
        client.delete_schedule(name)
    with pytest.raises(NotFoundError):
        client.get_schedule(name)

    assert fires[0].due_at > made.created_at
    for fire in fires:
        assert fire.due_at == int(fire.due_at) and int(fire.due_at) % 2 == 0, fire
        assert 0 <= fire.fired_at - fire.due_at < 3.0, fire
        assert fire.run_id is not None
        run = finished(client, fire.run_id)
        assert run.state is RunState.SUCCEEDED, run.error
        assert run.cause is not None
        assert run.cause["kind"] == "schedule"
        assert run.cause["schedule"] == name and run.cause["schedule_id"] == made.id
        assert run.cause["due_at"] == fire.due_at and run.cause["fire_id"] == fire.id
        assert client.get_params(run.id)["tag"] == "every-2s"
        why = client.why(run.id)
        assert why.event is None
        assert why.summary.startswith(f"schedule {name!r} (* * * * * */2 UTC) was due at ")
    assert len({f.due_at for f in fires}) == len(fires), "a due time fired twice"


def test_concurrency_forbid_skips_due_times_while_the_last_run_is_going(
    client: treadle.Client,
) -> None:
    name = unique("forbid")
    client.create_schedule(
        name, PIPELINE, "* * * * * */2", params={"pause": "3"}, concurrency="forbid"
    )
    try:
        skipped: list[ScheduleFireRecord] = eventually(
            lambda: [f for f in client.schedule_fires(name) if f.outcome.startswith("skipped")],
            12,
            f"a skipped fire of {name}",
        )
    finally:
        client.delete_schedule(name)
    runs = caused_by(client, "schedule", name)
    assert runs, "nothing started"
    first = runs[0]
    for fire in skipped:
        assert fire.run_id is None
        assert fire.outcome == (f"skipped: run {first.id[:8]} of this schedule is still running"), (
            fire
        )
        assert fire.due_at > first.cause["due_at"]  # type: ignore[index]
    # each run that did start began after the one before had ended
    ended = [finished(client, r.id) for r in runs]
    for earlier, later in itertools.pairwise(ended):
        assert earlier.ended_at is not None and later.created_at >= earlier.ended_at


def test_pause_stops_firing_and_resume_fires_again_without_catching_up(
    client: treadle.Client,
) -> None:
    name = unique("paused")
    # catch-up `all` would run every due time it finds unhandled: resume must leave none
    client.create_schedule(name, PIPELINE, "* * * * * *", catchup="all", max_catchup=100)
    try:
        eventually(lambda: started_fires(client, name), 5, f"a fire of {name}")
        assert client.pause_schedule(name).paused is True
        paused_at = time.time()
        time.sleep(0.6)  # a tick that read the schedule just before the pause may land
        while_paused = client.schedule_fires(name, limit=1000)
        time.sleep(2.0)
        later = client.schedule_fires(name, limit=1000)
        assert {f.id for f in later} == {f.id for f in while_paused}, "fired while paused"
        assert client.get_schedule(name).paused is True

        resumed_at = time.time()
        assert client.resume_schedule(name).paused is False
        eventually(
            lambda: [f for f in started_fires(client, name) if f.due_at >= resumed_at],
            5,
            f"a fire of {name} after resuming",
        )
        fires = client.schedule_fires(name, limit=1000)
    finally:
        client.delete_schedule(name)
    caught_up = [f for f in fires if paused_at < f.due_at < resumed_at]
    assert caught_up == [], f"due times of the pause were fired on resume: {caught_up}"
    assert all(f.due_at <= paused_at for f in while_paused)


# -- run.finished -------------------------------------------------------------------------


def test_a_run_finished_trigger_acts_on_failed_runs_and_not_on_succeeding_ones(
    platform: Platform, client: treadle.Client
) -> None:
    name = unique("on-failure")
    client.create_trigger(
        name,
        "run.finished",
        PIPELINE,
        params={"tag": "$event.run_id"},
        filter={"state": "FAILED", "pipeline": PIPELINE},
    )
    try:
        failing = client.submit_run(PIPELINE, {"fail": "true", "tag": "boom"})
        assert finished(client, failing.id).state is RunState.FAILED
        [started] = eventually(
            lambda: caused_by(client, "trigger", name), 10, f"a run started by {name}"
        )
        run = finished(client, started.id)
        assert run.state is RunState.SUCCEEDED, run.error
        assert client.get_params(run.id)["tag"] == failing.id
        why = client.why(run.id)
        assert why.cause["kind"] == "run.finished" and why.cause["trigger"] == name
        assert why.event is not None
        assert why.event.payload["run_id"] == failing.id
        assert why.event.payload["state"] == "FAILED"
        assert why.event.payload["pipeline"] == PIPELINE
        assert f"trigger {name!r} acted on a run.finished event" in why.summary
        assert failing.id in why.summary

        fine = client.submit_run(PIPELINE, {"tag": "fine"})
        assert finished(client, fine.id).state is RunState.SUCCEEDED

        def acted_on(run_id: str) -> Any:
            events = {
                e.id: e
                for e in client.list_events(kind="run.finished", limit=1000)
                if e.payload.get("run_id") == run_id
            }
            return [f for f in client.trigger_fires(name, limit=1000) if f.event_id in events]

        # the dispatcher looked at the succeeding run (and at the run it started itself)
        # and let both go
        for looked_at in (fine.id, run.id):
            [fire] = eventually(
                functools.partial(acted_on, looked_at), 10, f"{name} saw {looked_at}"
            )
            assert fire.run_id is None
            assert fire.outcome == "ignored: the filter does not match", fire
        assert [r.id for r in caused_by(client, "trigger", name)] == [run.id]
    finally:
        client.delete_trigger(name)
    assert platform.call(EDITOR, "GET", f"{IN_ALPHA}/triggers/{name}").status_code == 404
