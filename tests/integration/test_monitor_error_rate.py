"""The error rate of a monitor's windows, from a real `treadle deployments serve` process:
the monitor scrapes the server's `/metrics` (the `treadle_requests_total` counter), takes
a baseline when it first sees the deployment, and records errors over requests for the
window overall and per version, where alert rules read it.

The deployment is a 50% canary of clf v1 and v2, so both versions answer; each answer
says which version gave it (`x-model-version`, on refusals too), and the test counts
what it sent by that. The monitor runs in this process, on the real store, with a clock
just past the log's lag so that a window closes as soon as its rows are written.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from serving_support import (
    FEATURES,
    MODEL,
    USER,
    Server,
    client,
    module_home,
    ok,
    opened,
    random_rows,
    running,
    wait_for,
)

from treadle.monitoring.health import error_rates, request_counts
from treadle.monitoring.monitor import (
    LAG_SECONDS,
    Monitoring,
    new_monitor,
    predictions_dir,
    read_since,
)
from treadle.serving.metrics import ServerMetrics
from treadle.store import Store
from treadle.store.records import MonitorRecord, MonitorWindowRecord

pytestmark = pytest.mark.slow

NAME = "api"
RULE = "errors: error_rate > 0.1"
WINDOW_SECONDS = 60.0  # only the give-up deadline: a window closes once its rows are written


@pytest.fixture(scope="module")
def canary_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = module_home(tmp_path_factory, "monitor-errors")
    ok(home, "deploy", f"{MODEL}@champion", "--name", NAME, "--canary", "50%")
    return home


@contextmanager
def serving(home: Path) -> Iterator[Server]:
    """The deployment's model server, with the deployment saying where it listens (the
    same spec again with a port: no new revision, so the server keeps serving)."""
    with running(home, "deployments", "serve", NAME, "--no-batch") as server:
        deployed = ok(
            home, "deploy", f"{MODEL}@champion", "--name", NAME, "--canary", "50%",
            "--port", str(server.port),
        )  # fmt: skip
        assert "revision 1 " in deployed.stdout, str(deployed)
        yield server


@dataclasses.dataclass
class Sent:
    """What the test sent and how each request was answered, by version."""

    requests: Counter[str] = dataclasses.field(default_factory=Counter)
    errors: Counter[str] = dataclasses.field(default_factory=Counter)
    rows: int = 0

    def answer(self, response: httpx.Response, good: bool) -> None:
        version = response.headers["x-model-version"]
        self.requests[version] += 1
        if good:
            assert response.status_code == 200, response.text
            self.rows += 1
        else:
            assert 400 <= response.status_code < 500, response.text
            self.errors[version] += 1

    def rate(self, version: str | None = None) -> float:
        if version is None:
            return sum(self.errors.values()) / sum(self.requests.values())
        return self.errors[version] / self.requests[version]


def send(http: httpx.Client, good: int, bad: int, seed: int, into: Sent | None = None) -> Sent:
    """`good` one-row predictions, then `bad` refused ones: half a body that is not JSON,
    half a row without its last column."""
    sent = into or Sent()
    rows = random_rows(max(good, bad), seed)
    for row in rows[:good]:
        sent.answer(http.post("/predict", json={"columns": FEATURES, "data": [row]}), True)
    for i, row in enumerate(rows[:bad]):
        if i % 2:
            response = http.post(
                "/predict", content=b'{"columns": [', headers={"content-type": "application/json"}
            )
        else:
            response = http.post("/predict", json={"columns": FEATURES[:-1], "data": [row[:-1]]})
        sent.answer(response, False)
    return sent


class Watch:
    """A monitor of the deployment and a monitoring loop of its own, in this process,
    that advances only this monitor (another test's monitors are not its business)."""

    def __init__(self, store: Store, name: str, window_size: int) -> None:
        self.store = store
        project = store.projects.ensure_project(store.settings.project, USER)
        self.project_id = project.id
        # just past the log's lag: a window closes as soon as its rows are written
        self.monitoring = Monitoring(store, clock=lambda: time.time() + LAG_SECONDS + 0.01)
        self.id = store.monitoring.create_monitor(
            new_monitor(
                project_id=project.id,
                name=name,
                deployment=NAME,
                window_size=window_size,
                rules=[RULE],
                user=USER,
            )
        ).id

    def monitor(self) -> MonitorRecord:
        return self.store.monitoring.get_monitor_by_id(self.id)

    def windows(self) -> list[MonitorWindowRecord]:
        """Oldest first."""
        return list(reversed(self.store.monitoring.list_windows(self.id, 100)))

    def advance(self) -> int:
        """One pass of the loop over this monitor: how many windows it closed."""
        return self.monitoring.advance(self.monitor())

    def next_window(self) -> MonitorWindowRecord:
        """Advance until a window closes; that window."""
        before = len(self.windows())
        assert wait_for(lambda: self.advance() > 0, WINDOW_SECONDS, interval=0.1), (
            f"no window closed: {self.monitor()}"
        )
        windows = self.windows()
        assert len(windows) == before + 1
        return windows[-1]


def logged_rows(home: Path) -> int:
    return len(read_since(predictions_dir(home, "default", NAME), 0.0, time.time() + 60))


def test_a_window_counts_errors_overall_and_per_version_and_fires_the_rule(
    canary_home: Path,
) -> None:
    home = canary_home
    with serving(home) as server, client(server.url) as http, opened(home) as store:
        # traffic before the monitor exists is in the server's counters, not its windows
        earlier = logged_rows(home)
        send(http, good=6, bad=6, seed=1)
        assert wait_for(lambda: logged_rows(home) == earlier + 6, 30)
        watch = Watch(store, "errors", window_size=40)
        assert watch.advance() == 0  # first sight: the baseline scrape, no window
        sent = send(http, good=40, bad=8, seed=2)
        assert set(sent.requests) == {"1", "2"}, sent  # the canary: both versions answered

        window = watch.next_window()

        assert window.rows == sent.rows == 40
        health = window.stats["health"]
        assert health["error_rate"] == pytest.approx(sent.rate()) == 8 / 48
        by_version = health["by_version"]
        assert set(by_version) == {"1", "2"}
        for version in by_version:
            assert by_version[version]["error_rate"] == pytest.approx(sent.rate(version)), (
                version,
                sent,
            )
            assert by_version[version]["rows"] == sent.requests[version] - sent.errors[version]
        assert window.stats["metrics"]["error_rate"] == pytest.approx(sent.rate())

        (alert,) = store.monitoring.list_alerts(watch.project_id, watch.id, state="firing")
        assert (alert.name, alert.rule, alert.fired_seq) == ("errors", RULE, window.seq)
        assert alert.value == pytest.approx(sent.rate())
        assert watch.monitor().state == "alerting"
        (event,) = [
            e
            for e in store.automation.list_events(watch.project_id, "monitor.alert")
            if e.id == alert.event_id
        ]
        assert event.payload["metric"] == "error_rate"
        assert event.payload["value"] == pytest.approx(sent.rate())

        # the next window counts from where this one stopped: only good answers now
        clean = send(http, good=40, bad=0, seed=3)
        window = watch.next_window()
        assert window.stats["health"]["error_rate"] == 0.0
        assert {v: s["error_rate"] for v, s in window.stats["health"]["by_version"].items()} == {
            v: 0.0 for v in clean.requests
        }
        assert watch.monitor().state == "ok"  # the rule failed: the alert resolved
        assert not store.monitoring.list_alerts(watch.project_id, watch.id, state="firing")


def test_a_stopped_server_leaves_the_error_rate_unknown_and_the_loop_goes_on(
    canary_home: Path,
) -> None:
    home = canary_home
    with opened(home) as store:
        with serving(home) as server, client(server.url) as http:
            watch = Watch(store, "stopped", window_size=20)
            assert watch.advance() == 0  # the baseline
            # a monitor whose loop first looks after the server stopped: no baseline
            late = Watch(store, "late", window_size=20)
            send(http, good=20, bad=10, seed=4)
            server.stop()  # a clean stop writes the log out; /metrics no longer answers

        for each in (watch, late):
            window = each.next_window()

            assert window.rows == 20
            health = window.stats["health"]
            assert health["error_rate"] is None
            assert set(health["by_version"]) <= {"1", "2"} and health["by_version"]
            assert all(s["error_rate"] is None for s in health["by_version"].values())
            assert window.stats["metrics"]["error_rate"] is None
            # unknown is no data to the rule: it neither fires nor fails, nothing broke
            assert not store.monitoring.list_alerts(each.project_id, each.id)
            assert each.monitor().state == "ok", each.monitor()
        # a pass of the loop over every monitor puts neither of them in error
        watch.monitoring.tick()
        assert {watch.monitor().state, late.monitor().state} == {"ok"}


def served_text(*calls: tuple[int, str, int]) -> str:
    """The /metrics text of the model server's own metrics after these answers
    (version, endpoint, status)."""
    metrics = ServerMetrics()
    for version, endpoint, status in calls:
        metrics.observe(MODEL, version, endpoint, status, 0.001)
    return metrics.render().decode()


def test_error_rates_count_non_2xx_answers_and_keep_shadows_per_version() -> None:
    before = request_counts(served_text((1, "predict", 200)))
    after = request_counts(
        served_text(
            (1, "predict", 200),
            *[(1, "predict", 200)] * 3,
            (1, "invocations", 400),
            (2, "v2", 500),
            (2, "v2", 200),
            (0, "predict", 503),  # refused before a version was chosen
            *[(3, "shadow", 500)] * 2,  # a shadow's copies: no caller saw them
            (3, "shadow", 200),
        )
    )
    rates = error_rates(before, after)
    assert rates is not None
    assert rates["error_rate"] == pytest.approx(3 / 7)
    assert rates["by_version"] == pytest.approx({"1": 1 / 4, "2": 1 / 2, "3": 2 / 3})
    assert error_rates(after, after) == {"error_rate": None, "by_version": {}}
    # a counter that went down: the server restarted between the scrapes
    assert error_rates(after, request_counts(served_text((1, "predict", 200)))) is None
    with pytest.raises(ValueError):
        request_counts("<html>not metrics</html>")
