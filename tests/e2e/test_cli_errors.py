"""Bad input through the real `treadle` executable: each is refused with one `error:`
line and a hint on stderr, a non-zero exit, no traceback, and no run recorded.
`--debug` trades the one-liner for the traceback.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_support import (
    FRAGILE,
    NO_PIPELINE,
    QUICKSTART,
    USER,
    all_runs,
    assert_clean_error,
    recorded,
    treadle,
)

from treadle.store.records import RunRecord
from treadle.types import RunState

UNREACHABLE_DB = "postgresql+psycopg://postgres:s3cret@127.0.0.1:1/x"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, make_home: Callable[..., Path]) -> Path:
    """A home with one finished run, so "nothing written" is checked against a real store."""
    base = tmp_path_factory.mktemp("errors")
    (base / "marker").touch()
    home = make_home(base / "home")
    first = treadle(home, "run", FRAGILE, "-p", f"marker={base / 'marker'}", "-e", "seed")
    assert first.returncode == 0 and first.final_state == "SUCCEEDED", str(first)
    return home


def _experiments(home: Path) -> set[str]:
    with recorded(home) as store:
        project = store.projects.ensure_project(store.settings.project, USER).id
        return {s.experiment.name for s in store.projects.list_experiments(project)}


BAD_RUNS = {
    "unknown-param": (
        [QUICKSTART, "-p", "nosuch=1"],
        ["error: pipeline 'training' has no parameter 'nosuch'", "its parameters are: rows, c"],
    ),
    "wrong-type": (
        [QUICKSTART, "-p", "rows=abc"],
        ["error: parameter 'rows' expects int", "'abc'", "-p rows=<int>"],
    ),
    "no-equals": ([FRAGILE, "-p", "n"], ["error: -p 'n' is not KEY=VALUE", "-p c=0.5"]),
    "empty-key": ([FRAGILE, "-p", "=4"], ["is not KEY=VALUE"]),
    "missing-file": (["tests/resources/cli_nosuch.py"], ["error: no pipeline file", "path"]),
    "no-pipeline": ([NO_PIPELINE], ["defines no @pipeline", "decorate the pipeline function"]),
    "no-such-name": (
        [f"{FRAGILE}:nosuch"],
        ["has no pipeline named 'nosuch'", "pipelines there: fragile_chain"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_RUNS))
def test_bad_run_input_is_refused_and_records_nothing(seeded: Path, case: str) -> None:
    args, fragments = BAD_RUNS[case]
    runs_before = {r.id for r in all_runs(seeded)}
    result = treadle(seeded, "run", *args, "--experiment", f"never-{case}")
    assert_clean_error(result, *fragments)
    assert result.returncode == 1
    assert result.stdout == ""
    assert {r.id for r in all_runs(seeded)} == runs_before
    assert f"never-{case}" not in _experiments(seeded)


BAD_IDS = {
    "unknown": (["runs", "show", "deadbeef"], ["no run with id 'deadbeef'", "treadle runs list"]),
    "unknown-full": (["runs", "logs", "0" * 32], ["no run with id '0000"]),
    "too-short": (["runs", "show", "abc"], ["run id prefix 'abc' is too short", "at least 4"]),
    "not-hex": (["runs", "show", "zzzzzzzz"], ["'zzzzzzzz' is not a run id", "hexadecimal"]),
    "resume-unknown": (["runs", "resume", "deadbeef"], ["no run with id 'deadbeef'"]),
    "compare-unknown": (["runs", "compare", "deadbeef", "beefdead"], ["no run with id"]),
    "compare-one": (["runs", "compare", "deadbeef"], ["compare needs at least two runs"]),
    "artifacts-unknown-run": (["artifacts", "list", "deadbeef"], ["no run with id 'deadbeef'"]),
    "lineage-unknown": (["lineage", "deadbeef"], ["no artifact with id 'deadbeef'"]),
    "unknown-state": (["runs", "list", "--state", "bogus"], ["unknown state 'bogus'", "FAILED"]),
    "unknown-experiment": (
        ["runs", "list", "--experiment", "nosuch"],
        ["no experiment named 'nosuch'", "treadle experiments list"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_IDS))
def test_bad_ids_and_filters_are_refused(seeded: Path, case: str) -> None:
    args, fragments = BAD_IDS[case]
    runs_before = all_runs(seeded)
    result = treadle(seeded, *args)
    assert_clean_error(result, *fragments)
    assert result.returncode == 1
    assert all_runs(seeded) == runs_before


def test_an_ambiguous_prefix_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    # Two runs whose ids share a prefix cannot be made through the CLI (ids are random),
    # so their rows are written directly; everything read back goes through the CLI.
    ids = ["abcd" + "0" * 28, "abcd" + "1" * 28]
    with recorded(home) as store:
        project = store.projects.ensure_project(store.settings.project, USER)
        experiment = store.projects.ensure_experiment(project.id, "seeded", USER)
        for run_id in ids:
            now = time.time()
            store.runs.create_run(
                RunRecord(
                    id=run_id,
                    project_id=project.id,
                    experiment_id=experiment.id,
                    pipeline_version_id=None,
                    name=f"seeded-{run_id[4]}",
                    state=RunState.SUCCEEDED,
                    created_by=USER,
                    executor="local",
                    attempt=1,
                    created_at=now,
                    started_at=now,
                    ended_at=now,
                )
            )
    for args in (["runs", "show", "abcd"], ["runs", "logs", "abcd"], ["runs", "resume", "abcd"]):
        result = treadle(home, *args)
        assert_clean_error(result, "run id prefix 'abcd' is ambiguous", "give more characters")
    one = treadle(home, "runs", "show", "abcd1")
    assert one.returncode == 0, str(one)
    assert f"run {ids[1]}" in one.stdout


@pytest.mark.parametrize(
    "args",
    [["run", FRAGILE], ["runs", "list"], ["experiments", "list"], ["db", "current"]],
    ids=["run", "runs-list", "experiments-list", "db-current"],
)
def test_an_unreachable_database_is_one_clear_line(tmp_path: Path, args: list[str]) -> None:
    home = tmp_path / "home"
    result = treadle(home, *args, env={"TREADLE_DB_URL": UNREACHABLE_DB}, timeout=60)
    assert_clean_error(result, "cannot reach database", "check TREADLE_DB_URL")
    assert "127.0.0.1:1" in result.stderr
    assert "s3cret" not in result.output  # the password is redacted
    assert result.stdout == ""
    assert not home.exists()  # not even the artifact folder was made


def test_debug_shows_the_traceback_instead(seeded: Path) -> None:
    plain = treadle(seeded, "runs", "show", "deadbeef")
    assert_clean_error(plain, "no run with id 'deadbeef'")

    debug = treadle(seeded, "--debug", "runs", "show", "deadbeef")
    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug.stderr, str(debug)
    assert re.search(r"NotFoundError: no run with id 'deadbeef'", debug.stderr), str(debug)
    assert not debug.stderr.startswith("error:")

    # --debug is accepted anywhere on the line, also after the command's own options
    late = treadle(seeded, "run", FRAGILE, "-p", "n=abc", "--debug")
    assert late.returncode != 0
    assert "Traceback (most recent call last)" in late.stderr, str(late)
    assert "InvalidInputError: parameter 'n' expects int" in late.stderr


def test_unknown_executor_records_nothing(seeded: Path) -> None:
    runs_before = all_runs(seeded)
    result = treadle(seeded, "run", FRAGILE, "--executor", "bogus")
    assert_clean_error(result, "unknown executor 'bogus'", "local, process")
    assert all_runs(seeded) == runs_before, [
        (r.id[:8], r.state.value) for r in all_runs(seeded) if r not in runs_before
    ]


@pytest.mark.parametrize(
    "args",
    [
        ["runs", "show", "deadbeef"],
        ["runs", "list", "--experiment", "nosuch"],
        ["lineage", "deadbeef"],
    ],
    ids=["run", "experiment", "artifact"],
)
def test_a_not_found_hint_names_a_command_that_works(seeded: Path, args: list[str]) -> None:
    result = treadle(seeded, *args)
    assert_clean_error(result)
    hinted = re.search(r"`treadle ([^`]+)`", result.stderr.splitlines()[1])
    assert hinted, str(result)
    follow = treadle(seeded, *hinted.group(1).split())
    assert follow.returncode == 0, str(follow)
