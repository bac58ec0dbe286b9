"""A run that fails in its middle step, inspected and then resumed, all through the
real `treadle` executable. tests/resources/cli_fragile.py fails until a marker file
exists, so the fix between failure and resume is just creating that file.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_support import (
    FRAGILE,
    Result,
    all_runs,
    assert_clean_error,
    get_run,
    squash,
    states_by_node,
    steps_of,
    treadle,
)

from treadle.store.records import StepRunRecord


@dataclasses.dataclass(frozen=True)
class Flow:
    home: Path
    marker: Path
    failed: Result
    failed_steps: list[StepRunRecord]
    listed_failed: Result
    show_failed: Result
    logs: Result
    resumed: Result
    show_resumed: Result

    @property
    def run_id(self) -> str:
        return self.failed.run_id


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory, make_home: Callable[..., Path]) -> Flow:
    base = tmp_path_factory.mktemp("fragile")
    home, marker = make_home(base / "home"), base / "marker"
    failed = treadle(home, "run", FRAGILE, "-p", f"marker={marker}", "--experiment", "fragile")
    run_id = failed.run_id
    before = (
        steps_of(home, run_id),
        treadle(home, "runs", "list", "--state", "failed", "-q"),
        treadle(home, "runs", "show", run_id[:8]),
        treadle(home, "runs", "logs", run_id[:8]),
    )
    marker.write_text("fixed\n")
    resumed = treadle(home, "runs", "resume", run_id[:8])
    return Flow(home, marker, failed, *before, resumed, treadle(home, "runs", "show", run_id[:8]))


def _step_rows(show: Result) -> dict[str, list[str]]:
    """The rows of `runs show`'s steps table, by step."""
    rows = {}
    for line in show.stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 5:
            rows[cells[0]] = cells
    return rows


def test_failed_run_prints_the_error_and_the_resume_hint(flow: Flow) -> None:
    result = flow.failed
    assert result.final_state == "FAILED"
    assert "Traceback" not in result.output, str(result)
    out = squash(result.stdout)
    assert "✗ fragile failed" in out
    assert f"RuntimeError: marker file {flow.marker} is missing" in out
    assert "- report skipped" in out
    assert "(1 ran, 0 cached, 1 failed)" in out
    assert f"`treadle runs logs {flow.run_id[:8]}`" in out
    assert f"`treadle runs resume {flow.run_id[:8]}`" in out


def test_failed_run_is_recorded_failed_at_the_failing_step(flow: Flow) -> None:
    assert states_by_node(flow.failed_steps) == {"prepare": ["SUCCEEDED"], "fragile": ["FAILED"]}
    assert flow.listed_failed.stdout.split() == [flow.run_id[:8]]

    show = flow.show_failed
    assert show.returncode == 0, str(show)
    assert re.search(r"^state\s+FAILED\s*$", show.stdout, re.MULTILINE), str(show)
    assert re.search(
        r"^error\s+step 'fragile' failed: RuntimeError: marker file .* is missing",
        show.stdout,
        re.MULTILINE,
    ), str(show)
    rows = _step_rows(show)
    # the step after the failure never started, so it has no row
    assert {node: cells[1] for node, cells in rows.items()} == {
        "prepare": "SUCCEEDED",
        "fragile": "FAILED",
    }


def test_logs_show_the_traceback_and_what_the_step_printed(flow: Flow) -> None:
    logs = flow.logs
    assert logs.returncode == 0, str(logs)
    out = logs.stdout
    prepare_at, fragile_at = (
        out.index("prepare (attempt 1) SUCCEEDED"),
        out.index("fragile (attempt 1) FAILED"),
    )
    assert "prepare: making 4 numbers" in out[prepare_at:fragile_at]
    failure = out[fragile_at:]
    assert f"fragile: looking for the marker at {flow.marker}" in failure
    assert "fragile: a note on stderr" in failure
    assert "Traceback (most recent call last)" in failure
    assert "cli_fragile.py" in failure
    assert f"RuntimeError: marker file {flow.marker} is missing" in failure

    only = treadle(flow.home, "runs", "logs", flow.run_id[:8], "--step", "prepare")
    assert only.returncode == 0, str(only)
    assert "prepare: making 4 numbers" in only.stdout
    assert "fragile" not in only.stdout


def test_resume_reuses_the_finished_step_and_succeeds(flow: Flow) -> None:
    result = flow.resumed
    assert result.returncode == 0, str(result)
    assert result.final_state == "SUCCEEDED"
    assert result.run_id == flow.run_id  # the same run, not a new one
    assert "(attempt 2)" in result.stdout
    assert "↺ prepare reused" in result.stdout
    assert "✓ fragile done" in result.stdout and "✓ report done" in result.stdout

    run = get_run(flow.home, flow.run_id)
    assert run.state.value == "SUCCEEDED"
    assert run.attempt == 2
    assert run.error is None
    steps = states_by_node(steps_of(flow.home, flow.run_id))
    # prepare ran once, in the first attempt; resume did not record it again
    assert steps == {
        "prepare": ["SUCCEEDED"],
        "fragile": ["FAILED", "SUCCEEDED"],
        "report": ["SUCCEEDED"],
    }
    assert len(all_runs(flow.home)) == 1

    show = flow.show_resumed
    assert re.search(r"^state\s+SUCCEEDED \(attempt 2\)\s*$", show.stdout, re.MULTILINE), str(show)
    rows = _step_rows(show)
    assert {node: cells[1] for node, cells in rows.items()} == {
        "prepare": "SUCCEEDED",
        "fragile": "SUCCEEDED",
        "report": "SUCCEEDED",
    }
    assert "(value)" in rows["report"][4]


def test_a_succeeded_run_does_not_resume(flow: Flow) -> None:
    again = treadle(flow.home, "runs", "resume", flow.run_id[:8])
    assert_clean_error(again, "is SUCCEEDED; only FAILED or CANCELLED runs resume", "treadle run")
    assert get_run(flow.home, flow.run_id).attempt == 2


def test_marker_from_the_environment(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    marker.touch()
    home = tmp_path / "home"
    result = treadle(home, "run", FRAGILE, env={"TREADLE_TEST_MARKER": str(marker)})
    assert result.returncode == 0, str(result)
    assert result.final_state == "SUCCEEDED"
    assert "(3 ran, 0 cached)" in result.stdout


def test_failed_run_exits_1(flow: Flow) -> None:
    assert flow.failed.final_state == "FAILED"
    assert flow.failed.returncode == 1, str(flow.failed)


def test_failed_resume_exits_1(tmp_path: Path) -> None:
    home, marker = tmp_path / "home", tmp_path / "never-created"
    failed = treadle(home, "run", FRAGILE, "-p", f"marker={marker}")
    again = treadle(home, "runs", "resume", failed.run_id[:8])
    assert again.final_state == "FAILED"
    assert "`treadle runs resume" in again.stdout
    assert get_run(home, failed.run_id).attempt == 2
    assert again.returncode == 1, str(again)
