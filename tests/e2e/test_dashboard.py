"""The dashboard in headless Chromium, on a real `treadle up` over a home that a real
pipeline sweep, the registry, a canary deployment and a drifting monitor filled.

One server and one browser for the module. Every page is opened, what it shows is
checked against the API, a model is promoted and rolled back through the confirmation
pages, a schedule is paused and resumed, a viewer finds no buttons (and a forged form is
refused), and hostile run names, params and metric names stay text. Any JavaScript error
or console error fails the test that caused it. Screenshots go to
$TREADLE_TEST_ARTIFACTS (default .test-artifacts/dashboard), printed at the start.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dashboard_support import (
    API,
    DEPLOYMENT,
    EVIL_KEY,
    EVIL_RUN,
    EVIL_VALUE,
    EXPERIMENT,
    MODEL,
    MONITOR,
    REPO,
    Platform,
    start,
)

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(os.environ.get("TREADLE_TEST_ARTIFACTS", REPO / ".test-artifacts" / "dashboard"))


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    p = start(tmp_path_factory.mktemp("dashboard"))
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="module")
def shots() -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)  # each run overwrites its own files
    print(f"\ndashboard screenshots: {SHOTS}")
    return SHOTS


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make chromium` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def log_in(browser: Any, platform: Platform, token: str) -> Any:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(f"{platform.url}/")
    assert "/ui/login" in page.url
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/ui/p/default/$"))
    page.close()
    return context


@pytest.fixture(scope="module")
def admin(browser: Any, platform: Platform) -> Iterator[Any]:
    context = log_in(browser, platform, platform.admin)
    yield context
    context.close()


@pytest.fixture(scope="module")
def viewer(browser: Any, platform: Platform) -> Iterator[Any]:
    context = log_in(browser, platform, platform.viewer)
    yield context
    context.close()


class Watched:
    """A page whose JavaScript errors and console errors are collected."""

    def __init__(self, page: Any, base: str) -> None:
        self.page = page
        self.base = base
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on(
            "console",
            lambda msg: self.errors.append(f"console: {msg.text}") if msg.type == "error" else None,
        )

    def open(self, path: str) -> Any:
        response = self.page.goto(f"{self.base}/ui/p/default{path}")
        assert response is not None and response.status == 200, (
            f"{path}: {response.status if response else 'no response'}"
        )
        return self.page

    def charts_drawn(self, at_least: int = 1) -> int:
        holders = self.page.locator("[data-figure]")
        count = holders.count()
        assert count >= at_least, f"{count} charts on {self.page.url}"
        self.page.wait_for_function(
            "n => document.querySelectorAll('[data-drawn=\"1\"]').length >= n", arg=count
        )
        return int(count)

    def shot(self, folder: Path, name: str) -> None:
        self.page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def _watched(context: Any, platform: Platform) -> Iterator[Watched]:
    watched = Watched(context.new_page(), platform.url)
    yield watched
    watched.page.close()
    assert not watched.errors, "\n".join(watched.errors)


@pytest.fixture
def page(admin: Any, platform: Platform) -> Iterator[Watched]:
    yield from _watched(admin, platform)


@pytest.fixture
def viewer_page(viewer: Any, platform: Platform) -> Iterator[Watched]:
    yield from _watched(viewer, platform)


def test_login_needs_a_valid_token_and_keeps_it_out_of_the_cookie(
    browser: Any, platform: Platform, admin: Any
) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{platform.url}/ui/p/default/runs")
    assert "/ui/login" in page.url
    page.fill("input[name=token]", "trd_" + "x" * 40)
    page.click("button[type=submit]")
    assert "not valid" in page.locator("[data-login-error]").inner_text()
    page.fill("input[name=token]", platform.viewer)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/ui/p/default/runs$"))  # back where it was going
    assert page.locator("[data-user]").inner_text() == "vera"
    (cookie,) = [c for c in context.cookies() if c["name"] == "treadle_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert platform.viewer not in cookie["value"]
    page.click("text=log out")
    page.goto(f"{platform.url}/ui/p/default/")
    assert "/ui/login" in page.url
    context.close()


def test_home_shows_the_loop(page: Watched, platform: Platform, shots: Path) -> None:
    p = page.open("/")
    runs = platform.api("GET", f"{API}/runs", params={"limit": 10})
    shown = p.locator("[data-section=runs] tr[data-run]").evaluate_all(
        "rows => rows.map(r => r.dataset.run)"
    )
    assert shown == [r["id"] for r in runs]
    aliases = platform.api("GET", f"{API}/models/{MODEL}/aliases")
    tags = p.locator(f"[data-model='{MODEL}'] [data-alias]").all_inner_texts()
    assert sorted(tags) == sorted(f"{a['alias']} → v{a['version']}" for a in aliases)
    traffic = p.locator(f"[data-deployment='{DEPLOYMENT}'] [data-target]").all_inner_texts()
    assert traffic == ["v1 primary 80%", "v2 canary 20%"]
    assert "alerting" in p.locator(f"[data-deployment='{DEPLOYMENT}']").inner_text()
    alerts = platform.api("GET", f"{API}/alerts", params={"state": "firing"})
    assert p.locator("[data-section=alerts] tr[data-alert]").count() == len(alerts) >= 1
    assert "nightly" in p.locator("[data-section=schedules]").inner_text()
    page.shot(shots, "home")


def test_runs_list_filters_and_pages(page: Watched, platform: Platform) -> None:
    p = page.open("/runs")
    every = platform.api("GET", f"{API}/runs", params={"limit": 100})
    assert p.locator("tr[data-run]").count() == len(every)
    p = page.open("/runs?pipeline=training")
    ids = p.locator("tr[data-run]").evaluate_all("rows => rows.map(r => r.dataset.run)")
    assert platform.seeded["evil_run"] not in ids and platform.seeded["runs"][0] in ids
    p = page.open(f"/runs?experiment={EXPERIMENT}&since=1h&cause=manual")
    ids = p.locator("tr[data-run]").evaluate_all("rows => rows.map(r => r.dataset.run)")
    swept = platform.api("GET", f"{API}/runs", params={"experiment": EXPERIMENT})
    assert ids == [r["id"] for r in swept] and platform.seeded["fired_run"] not in ids
    p = page.open("/runs?cause=schedule")
    assert p.locator("tr[data-run]").count() == 0


def test_run_page_draws_the_graph_params_metrics_and_logs(
    page: Watched, platform: Platform, shots: Path
) -> None:
    run_id = platform.seeded["runs"][0]
    p = page.open(f"/runs/{run_id}")
    steps = platform.api("GET", f"{API}/runs/{run_id}/steps")
    nodes = p.locator("[data-dag] [data-node]")
    assert sorted(nodes.evaluate_all("n => n.map(x => x.dataset.node)")) == sorted(
        s["node"] for s in steps
    )
    assert set(nodes.evaluate_all("n => n.map(x => x.dataset.state)")) == {"SUCCEEDED"}
    params = platform.api("GET", f"{API}/runs/{run_id}/params")
    rows = p.locator("[data-params] tr").evaluate_all(
        "rows => rows.map(r => [r.cells[0].innerText, r.cells[1].innerText])"
    )
    assert dict(rows) == params
    latest = platform.api("GET", f"{API}/runs/{run_id}/metrics/latest")
    shown = p.locator("[data-metric=accuracy]").inner_text()
    assert float(shown) == pytest.approx(latest["accuracy"], rel=1e-3)
    page.charts_drawn(at_least=1)
    bars = p.evaluate("() => document.querySelector('[data-figure]').data.map(t => t.x)")
    assert sorted(bars[0]) == sorted(latest)  # one value each: one bar chart of them all
    assert "train rows:" in (p.locator("[data-log=split] pre").text_content() or "")
    why = platform.api("GET", f"{API}/runs/{run_id}/why")
    assert why["summary"] in p.locator("[data-why]").inner_text()
    page.shot(shots, "run")
    # the cached re-run: every step is a cache hit, marked in the graph
    p = page.open(f"/runs/{platform.seeded['cached_run']}")
    marks = p.locator("[data-dag] [data-node]").evaluate_all("n => n.map(x => x.dataset.cached)")
    assert marks and set(marks) == {"yes"}
    assert "cache hit" in p.locator("[data-dag]").inner_text()
    # a run a trigger started says so
    p = page.open(f"/runs/{platform.seeded['fired_run']}")
    assert "on-drift" in p.locator("[data-why]").inner_text()


def test_click_through_run_artifact_model_deployment(
    page: Watched, platform: Platform, shots: Path
) -> None:
    run_id = platform.seeded["runs"][0]
    p = page.open(f"/runs/{run_id}")
    p.locator("[data-artifacts] tr", has_text="train").locator("a").first.click()
    p.wait_for_url(re.compile(r".*/artifacts/[0-9a-f]+$"))
    artifact_id = p.url.rsplit("/", 1)[1]
    lineage = platform.api("GET", f"{API}/artifacts/{artifact_id}/lineage")
    assert lineage["artifact"]["kind"] == "model"
    consumers = {e["step_run"]["node"] for e in lineage["consumed_by"]}
    assert consumers and all(
        n in p.locator("[data-section=consumed]").inner_text() for n in consumers
    )
    page.shot(shots, "artifact")
    p.locator("[data-model-link]").first.click()
    p.wait_for_url(re.compile(rf".*/models/{MODEL}/versions/1$"))
    assert "champion" in p.locator("[data-version-aliases]").inner_text()
    assert p.locator("[data-run-link]").get_attribute("href", timeout=5000).endswith(run_id)
    page.shot(shots, "model-version")
    p.locator("[data-deployment-link]").first.click()
    p.wait_for_url(re.compile(rf".*/deployments/{DEPLOYMENT}$"))
    revisions = platform.api("GET", f"{API}/deployments/{DEPLOYMENT}/revisions")
    assert p.locator("tr[data-revision]").count() == len(revisions)
    page.charts_drawn(at_least=3)  # traffic, request rate, latency
    page.shot(shots, "deployment")


def test_deployment_rolls_back_after_confirming_and_follows_again(
    page: Watched, platform: Platform
) -> None:
    p = page.open(f"/deployments/{DEPLOYMENT}")
    before = platform.api("GET", f"{API}/deployments/{DEPLOYMENT}/revisions")
    p.click("[data-deployment-rollback]")
    assert p.locator("[data-confirm]").is_visible()
    assert len(platform.api("GET", f"{API}/deployments/{DEPLOYMENT}/revisions")) == len(before)
    p.click("[data-confirm-go]")
    p.wait_for_selector(".flash.ok")
    after = platform.api("GET", f"{API}/deployments/{DEPLOYMENT}/revisions")
    assert len(after) == len(before) + 1
    served = [(t["version"], t["weight"]) for t in after[-1]["targets"]]
    assert served == [(t["version"], t["weight"]) for t in before[-2]["targets"]]
    assert platform.api("GET", f"{API}/deployments/{DEPLOYMENT}")["spec"]["pinned"] is True
    assert p.locator("tr[data-revision]").count() == len(after)
    p.click("[data-follow]")
    p.wait_for_selector(".flash.ok")
    assert platform.api("GET", f"{API}/deployments/{DEPLOYMENT}")["spec"]["pinned"] is False


def test_experiment_table_parallel_coordinates_and_compare(
    page: Watched, platform: Platform, shots: Path
) -> None:
    p = page.open(f"/experiments/{EXPERIMENT}")
    runs = platform.api("GET", f"{API}/runs", params={"experiment": EXPERIMENT, "limit": 100})
    assert p.locator("tr[data-run]").count() == len(runs)
    assert p.locator("th[data-column='param:c']").count() == 1
    assert p.locator("th[data-column='metric:accuracy']").count() == 1
    page.charts_drawn(at_least=2)  # parallel coordinates and a scatter
    lines = p.locator("#parallel .scatterlayer .trace").count()
    assert lines == len(runs)  # a line per run
    axes = " ".join(p.locator("#parallel .xtick").all_text_contents())
    assert "param: c" in axes and "accuracy" in axes
    points = p.locator("#scatter .scatterlayer .point").count()
    assert points == sum(1 for r in runs if r["name"] != EVIL_RUN)
    # sort by accuracy, highest first, in the browser
    header = p.locator("th[data-column='metric:accuracy']")
    header.click()
    header.click()
    column = p.locator("th").all_inner_texts().index("accuracy")
    values = p.locator("tr[data-run]").evaluate_all(
        f"rows => rows.map(r => r.cells[{column}].getAttribute('data-sort'))"
    )
    numbers = [float(v) for v in values if v]
    assert numbers == sorted(numbers, reverse=True)
    page.shot(shots, "experiment")
    first, second = platform.seeded["runs"][:2]
    p.check(f"input[value='{first}']")
    p.check(f"input[value='{second}']")
    p.click("[data-compare-go]")
    p.wait_for_url(re.compile(r".*/compare\?run=.*"))
    assert p.locator("[data-param=c]").get_attribute("data-differs") == "yes"
    assert p.locator("[data-param=rows]").get_attribute("data-differs") == "no"
    page.charts_drawn(at_least=1)
    traces = p.evaluate(
        "() => Array.from(document.querySelectorAll('[data-figure]')).map(d => d.data.length)"
    )
    assert traces == [2]  # a bar per run for each metric
    page.shot(shots, "compare")


def test_promote_and_roll_back_after_confirming(
    page: Watched, platform: Platform, shots: Path
) -> None:
    challenger = platform.api("GET", f"{API}/models/{MODEL}/aliases/challenger")["version"]
    p = page.open(f"/models/{MODEL}")
    p.fill("textarea[name=require]", "accuracy >= champion.accuracy - 0.05")
    p.click("[data-promote]")
    assert p.locator("[data-confirm]").is_visible()
    assert p.locator("[data-incoming]").inner_text() == f"v{challenger}"
    before = platform.api("GET", f"{API}/models/{MODEL}/aliases/champion")
    assert before["version"] == 1  # nothing moved before confirming
    page.shot(shots, "promote-confirm")
    p.click("[data-confirm-go]")
    p.wait_for_url(re.compile(rf".*/models/{MODEL}$"))
    assert f"champion → version {challenger}" in p.locator(".flash.ok").inner_text()
    champion = platform.api("GET", f"{API}/models/{MODEL}/aliases/champion")
    assert champion["version"] == challenger
    history = platform.api(
        "GET", f"{API}/models/{MODEL}/alias-history", params={"alias": "champion"}
    )
    assert history[-1]["by"] == "admin" and history[-1]["to_version"] == challenger
    shown = p.locator("[data-alias=champion] [data-alias-version]").inner_text()
    assert shown == f"v{challenger}"
    # a gate that fails is refused and says which
    p = page.open(f"/models/{MODEL}/promote?source=3&target=champion&require=accuracy+%3E%3D+1.1")
    p.click("[data-confirm-go]")
    assert "accuracy >= 1.1" in p.locator(".flash.error").inner_text()
    champion = platform.api("GET", f"{API}/models/{MODEL}/aliases/champion")
    assert champion["version"] == challenger
    p.click("[data-rollback=champion]")
    assert p.locator("[data-incoming]").inner_text() == "v1"
    p.click("[data-confirm-go]")
    p.wait_for_url(re.compile(rf".*/models/{MODEL}$"))
    assert platform.api("GET", f"{API}/models/{MODEL}/aliases/champion")["version"] == 1
    page.shot(shots, "model")


def test_pipelines_schedules_pause_and_resume(
    page: Watched, platform: Platform, shots: Path
) -> None:
    p = page.open("/pipelines")
    versions = platform.api("GET", f"{API}/pipelines/training/versions")
    assert p.locator("[data-pipeline=training] tr[data-version]").count() == len(versions)
    assert "fired" in p.locator("[data-trigger=on-drift]").inner_text() or platform.seeded[
        "fired_run"
    ][:8] in (p.locator("[data-trigger=on-drift] a").first.get_attribute("href") or "")
    p.click("[data-schedule-toggle=nightly]")
    p.wait_for_selector(".flash.ok")
    assert p.locator("[data-schedule=nightly] [data-schedule-state]").inner_text() == "paused"
    assert platform.api("GET", f"{API}/schedules/nightly")["paused"] is True
    page.shot(shots, "pipelines")
    p.click("[data-schedule-toggle=nightly]")
    p.wait_for_selector(".flash.ok")
    assert platform.api("GET", f"{API}/schedules/nightly")["paused"] is False
    p.click("[data-trigger-toggle=on-drift]")
    p.wait_for_selector(".flash.ok")
    assert p.locator("[data-trigger=on-drift] [data-trigger-state]").inner_text() == "disabled"
    assert platform.api("GET", f"{API}/triggers/on-drift")["enabled"] is False
    p.click("[data-trigger-toggle=on-drift]")
    p.wait_for_selector(".flash.ok")
    assert platform.api("GET", f"{API}/triggers/on-drift")["enabled"] is True


def test_monitoring_shows_drift_distributions_and_alerts(
    page: Watched, platform: Platform, shots: Path
) -> None:
    p = page.open(f"/monitoring/{MONITOR}")
    assert p.locator("[data-section=drift] [data-figure]").count() == 1
    assert p.locator("[data-section=distribution] [data-figure]").count() == 1
    page.charts_drawn(at_least=4)
    alerts = platform.api("GET", f"{API}/alerts")
    assert p.locator("[data-alerts] tr[data-alert]").count() == len(alerts) >= 1
    page.shot(shots, "monitor")
    p = page.open("/monitoring")
    assert "alerting" in p.locator(f"[data-monitor={MONITOR}]").inner_text()
    p = page.open("/deployments")
    assert p.locator(f"tr[data-deployment={DEPLOYMENT}]").count() == 1
    p = page.open("/experiments")
    summaries = platform.api("GET", f"{API}/experiments")
    shown = p.locator("tr[data-experiment]").evaluate_all("r => r.map(x => x.dataset.experiment)")
    assert sorted(shown) == sorted(e["experiment"]["name"] for e in summaries)
    p = page.open("/models")
    assert p.locator(f"tr[data-model='{MODEL}'] [data-alias]").count() == 2


def test_a_viewer_sees_no_buttons_and_a_forged_form_is_refused(
    viewer_page: Watched, platform: Platform
) -> None:
    p = viewer_page.open(f"/models/{MODEL}")
    assert p.locator("[data-promote]").count() == 0
    assert p.locator("[data-rollback]").count() == 0
    p = viewer_page.open("/pipelines")
    assert p.locator("[data-schedule-toggle]").count() == 0
    assert p.locator("[data-trigger-toggle]").count() == 0
    p = viewer_page.open(f"/deployments/{DEPLOYMENT}")
    assert p.locator("[data-deployment-rollback]").count() == 0
    # the viewer's own session and CSRF token, sent by hand: the role check still refuses
    csrf = p.locator("input[name=csrf]").first.get_attribute("value")
    refused = p.request.post(
        f"{platform.url}/ui/p/default/schedules/nightly/pause",
        form={"csrf": csrf or ""},
        headers={"origin": platform.url},
    )
    assert refused.status == 403
    assert platform.api("GET", f"{API}/schedules/nightly")["paused"] is False
    # a project the viewer is not a member of does not exist for them, as in the API
    platform.api("POST", "/api/v1/projects", json={"name": "hidden"})
    hidden = p.goto(f"{platform.url}/ui/p/hidden/runs")
    assert hidden is not None and hidden.status == 404
    viewer_page.errors.clear()  # the 404 itself is logged by the browser


def test_forms_need_the_session_csrf_token_and_the_same_origin(
    page: Watched, platform: Platform
) -> None:
    p = page.open("/pipelines")
    no_token = p.request.post(
        f"{platform.url}/ui/p/default/schedules/nightly/pause",
        form={"csrf": "guessed"},
        headers={"origin": platform.url},
    )
    assert no_token.status == 403
    cookie = {c["name"]: c["value"] for c in p.context.cookies()}["treadle_session"]
    csrf = p.locator("input[name=csrf]").first.get_attribute("value")
    other_site = httpx.post(
        f"{platform.url}/ui/p/default/schedules/nightly/pause",
        data={"csrf": csrf},
        cookies={"treadle_session": cookie},
        headers={"origin": "http://evil.example"},
        trust_env=False,
    )
    assert other_site.status_code == 403
    assert platform.api("GET", f"{API}/schedules/nightly")["paused"] is False


def test_hostile_names_and_values_are_shown_as_text(page: Watched, platform: Platform) -> None:
    evil = platform.seeded["evil_run"]
    other = platform.seeded["runs"][0]
    for path in (
        "/",
        "/runs",
        f"/runs/{evil}",
        f"/experiments/{EXPERIMENT}",
        f"/compare?run={evil}&run={other}",
    ):
        p = page.open(path)
        p.wait_for_load_state("load")
        if p.locator("[data-figure]").count():
            page.charts_drawn()
        assert p.evaluate("() => window.__xss") is None, path
        assert p.locator("img[src=x]").count() == 0, path
        text = p.locator("main").inner_text()
        assert EVIL_RUN in text, path
        if path != "/" and path != "/runs":
            assert EVIL_KEY in text, path
    p = page.open(f"/runs/{evil}")
    page.charts_drawn()
    # a chart titled with the hostile metric name shows it as text too
    assert p.locator("[data-figure] .gtitle").first.text_content() == EVIL_KEY
    assert p.locator("[data-params] td").first.inner_text() == EVIL_VALUE
    p.hover("[data-params] td")
    assert p.evaluate("() => window.__xss") is None
    assert p.locator("[data-params] b").count() == 0
