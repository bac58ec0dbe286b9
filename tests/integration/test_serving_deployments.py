"""Managed deployments through the real CLI and a real `treadle deployments serve api`
process: canary shares, shadows that are logged but never answer, rollback to the
previous revision (and staying there), and the revision history `show` prints.

The module is one story on one server, in file order: deploy, canary, shadow,
rollback, show. Each test sets the policy it needs and waits until the server reports
the revision the CLI created, so what it measures is that revision's traffic.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serving_support import (
    FEATURES,
    MODEL,
    Completed,
    Server,
    client,
    expected,
    metric_samples,
    module_home,
    ok,
    opened,
    running,
    telling_rows,
    treadle,
    wait_for,
)

from treadle.serving.predlog import read_predictions

pytestmark = pytest.mark.slow

NAME = "api"
REVISION = re.compile(r"revision (\d+) — ")
CANARY_REQUESTS = 1_000
# 1,000 draws at 30%: the standard deviation of the share is 1.45 points; 6 points is
# more than four of them, so a correct router fails this about once in 30,000 runs
CANARY_TOLERANCE = 0.06


@dataclasses.dataclass(frozen=True)
class Served:
    home: Path
    server: Server
    http: httpx.Client
    deployed: Completed
    rows: list[list[float]]
    answers: dict[int, list[int]]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = module_home(tmp_path_factory, "deployments")
    deployed = ok(home, "deploy", f"{MODEL}@champion", "--name", NAME)
    with (
        running(home, "deployments", "serve", NAME, "--no-batch") as server,
        client(server.url) as http,
    ):
        rows = telling_rows(home, 20, seed=9)
        answers = {v: expected(home, v, rows) for v in (1, 2)}
        yield Served(home, server, http, deployed, rows, answers)


def table_text(output: str) -> str:
    """A rich table's text with borders gone and whitespace folded: cells in order."""
    return " ".join(re.sub(r"[\u2500-\u257f]", " ", output).split())


def revision_of(result: Completed) -> int:
    found = REVISION.findall(result.stdout)
    assert len(found) == 1, str(result)
    return int(found[0])


def metadata(served: Served) -> dict[str, object]:
    response = served.http.get(f"/v2/models/{MODEL}")
    assert response.status_code == 200, response.text
    meta: dict[str, object] = response.json()
    return meta


def wait_revision(served: Served, revision: int) -> dict[str, object]:
    """Until the server has swapped the revision in (it polls the store every second)."""
    assert wait_for(lambda: metadata(served)["revision"] == revision, 15, interval=0.1), (
        f"still on {metadata(served)['revision']}, not {revision}:\n{served.server.output()}"
    )
    return metadata(served)


def change(served: Served, *args: str) -> dict[str, object]:
    """Run a deployments command and wait until the server serves its revision."""
    return wait_revision(served, revision_of(ok(served.home, *args)))


def ask(served: Served, i: int, request_id: str | None = None) -> tuple[int, int]:
    """One telling row; (version that answered, its prediction), checked to agree."""
    row = i % len(served.rows)
    headers = {"x-request-id": request_id} if request_id else {}
    response = served.http.post(
        "/predict", json={"columns": FEATURES, "data": [served.rows[row]]}, headers=headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    version, (prediction,) = int(body["version"]), body["predictions"]
    assert prediction == served.answers[version][row], f"v{version} answered for another"
    assert response.headers["x-model-version"] == str(version)
    return version, prediction


def test_deploy_serves_the_alias(served: Served) -> None:
    assert revision_of(served.deployed) == 1
    assert "created: single clf@champion" in served.deployed.stdout
    meta = metadata(served)
    assert meta["revision"] == 1
    assert meta["versions"] == ["1"]
    assert {ask(served, i)[0] for i in range(20)} == {1}
    assert f"serving {NAME}: v1 primary (revision 1)" in served.server.output()


def test_canary_gives_the_candidate_its_share(served: Served) -> None:
    meta = change(
        served, "deployments", "canary", NAME, "--percent", "30", "--candidate", "challenger"
    )
    assert meta["versions"] == ["1", "2"]
    versions = Counter(ask(served, i)[0] for i in range(CANARY_REQUESTS))
    assert set(versions) == {1, 2}
    share = versions[2] / CANARY_REQUESTS
    assert abs(share - 0.30) <= CANARY_TOLERANCE, f"the candidate answered {share:.1%}"
    assert "v1 primary, v2 canary 30%" in served.server.output()


def test_shadow_answers_from_the_primary_and_logs_both(served: Served) -> None:
    meta = change(served, "deployments", "shadow", NAME, "--candidate", "challenger")
    assert meta["versions"] == ["1", "2"]
    ids = [f"shadowed-{i:03d}" for i in range(100)]
    for i, rid in enumerate(ids):
        assert ask(served, i, rid)[0] == 1, "a shadow answered a caller"

    folder = served.home / "predictions" / "default" / NAME
    by_id: dict[str, dict[int, int]] = {}

    def both_logged() -> bool:
        by_id.clear()
        if folder.exists():
            for row in read_predictions(folder).to_pylist():
                if row["request_id"] in ids:
                    by_id.setdefault(row["request_id"], {})[row["version"]] = row["prediction"]
        return len(by_id) == len(ids) and all(len(v) == 2 for v in by_id.values())

    assert wait_for(both_logged, 10, interval=0.2), (
        f"{sum(len(v) == 2 for v in by_id.values())} of {len(ids)} requests logged twice"
    )
    for i, rid in enumerate(ids):
        row = i % len(served.rows)
        assert by_id[rid] == {1: served.answers[1][row], 2: served.answers[2][row]}, rid
    shadowed = sum(
        value
        for labels, value in metric_samples(
            served.http.get("/metrics").text, "treadle_requests_total"
        )
        if labels["endpoint"] == "shadow" and labels["version"] == "2" and labels["status"] == "200"
    )
    assert shadowed >= len(ids)


def test_rollback_returns_to_the_previous_revision_and_stays(served: Served) -> None:
    single = change(served, "deployments", "single", NAME)
    assert single["versions"] == ["1"]
    # the deployment follows its alias: moving champion makes a revision of its own
    ok(served.home, "models", "alias", MODEL, "champion", "2")
    assert wait_for(lambda: metadata(served)["versions"] == ["2"], 15, interval=0.1)
    assert {ask(served, i)[0] for i in range(10)} == {2}

    rolled = ok(served.home, "deployments", "rollback", NAME)
    assert f"rollback to revision {single['revision']} (v1 primary)" in rolled.stdout
    meta = wait_revision(served, revision_of(rolled))
    assert meta["versions"] == ["1"]
    assert {ask(served, i)[0] for i in range(10)} == {1}

    # pinned: champion still names v2, and two polls later v1 still answers
    time.sleep(2.5)
    assert metadata(served)["revision"] == meta["revision"]
    assert {ask(served, i)[0] for i in range(10)} == {1}

    # a second rollback goes further back, past the revision the first one restored
    again = ok(served.home, "deployments", "rollback", NAME)
    target = int(re.findall(r"rollback to revision (\d+)", again.stdout)[0])
    assert target < int(str(single["revision"])), str(again)
    assert "v1 primary, v2 shadow" in again.stdout
    meta = wait_revision(served, revision_of(again))
    assert meta["versions"] == ["1", "2"]
    assert {ask(served, i)[0] for i in range(10)} == {1}

    followed = change(served, "deployments", "follow", NAME)
    assert followed["versions"] == ["2"]
    assert {ask(served, i)[0] for i in range(10)} == {2}


def test_show_lists_every_revision_with_its_reason(served: Served) -> None:
    shown = ok(served.home, "deployments", "show", NAME)
    text = table_text(shown.stdout)
    assert f"{NAME} follows {MODEL}@champion, policy single" in text
    with opened(served.home) as store:
        project = store.projects.ensure_project(store.settings.project, "x")
        deployment = store.deployments.get_deployment(project.id, NAME)
        revisions = store.deployments.list_revisions(deployment.id)
    assert len(revisions) >= 8
    for r in revisions:
        assert f" {r.number} " in f" {text} "
        assert " ".join(r.reason.split()) in text, r.reason
    reasons = " | ".join(r.reason for r in revisions)
    for fragment in (
        "created: single clf@champion",
        "policy now canary with challenger",
        "policy now shadow with challenger",
        "now resolves to v2 primary",
        "rollback to revision",
        "following aliases again",
    ):
        assert fragment in reasons, reasons
    listed = table_text(ok(served.home, "deployments", "list").stdout)
    assert f"{NAME} {MODEL}@champion single {revisions[-1].number} v2 primary no" in listed


def test_canary_share_out_of_range_is_refused(served: Served) -> None:
    result = treadle(served.home, "deployments", "canary", NAME, "--percent", "150")
    assert result.returncode == 1, str(result)
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: "), str(result)
    assert "150" in result.stderr and "between 0% and 100%" in result.stderr


def test_canary_share_error_names_the_option_given(served: Served) -> None:
    result = treadle(served.home, "deployments", "canary", NAME, "--percent", "150")
    assert "--percent" in result.stderr, str(result)
