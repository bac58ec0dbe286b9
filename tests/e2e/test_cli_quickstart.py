"""The quickstart through the real `treadle` executable: run, re-run from the cache,
change one parameter, then inspect what was recorded with every read-only command.

One home is shared by the module: the three runs of the quickstart (as demo.sh makes
them) are made once, and each test reads from them.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import pytest
from cli_support import (
    QUICKSTART,
    Result,
    all_runs,
    get_run,
    recorded,
    squash,
    states_by_node,
    steps_of,
    treadle,
)

pytestmark = pytest.mark.slow

NODES = ["load", "split", "train", "evaluate", "register"]
SHORT_ID = re.compile(r"^[0-9a-f]{8}$")


@dataclasses.dataclass(frozen=True)
class Quickstart:
    home: Path
    first: Result  # -p c=0.5, everything computed
    again: Result  # -p c=0.5 again, everything from the cache
    changed: Result  # -p c=0.05, train and evaluate computed again

    @property
    def ids(self) -> tuple[str, str, str]:
        return self.first.run_id, self.again.run_id, self.changed.run_id


@pytest.fixture(scope="module")
def qs(tmp_path_factory: pytest.TempPathFactory) -> Quickstart:
    home = tmp_path_factory.mktemp("quickstart") / "home"
    runs = [
        treadle(home, "run", QUICKSTART, "-p", f"c={c}", "--experiment", "demo")
        for c in ("0.5", "0.5", "0.05")
    ]
    return Quickstart(home, *runs)


def _rows(text: str, first_cell: str) -> list[list[str]]:
    """The cells of the table rows whose first cell is `first_cell`."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if cells and cells[0] == first_cell:
            rows.append(cells)
    return rows


def _model_artifact_id(home: Path, run_id: str) -> str:
    with recorded(home) as store:
        models = [a for _, _, a in store.artifacts.run_artifacts(run_id) if a.kind == "model"]
    assert len(models) == 1
    return models[0].id


# -- run, run again, change a parameter ------------------------------------------------


def test_first_run_prints_its_id_and_a_summary_with_metrics(qs: Quickstart) -> None:
    result = qs.first
    assert result.returncode == 0, str(result)
    assert "Traceback" not in result.output
    assert result.final_state == "SUCCEEDED"
    assert "(5 ran, 0 cached)" in result.stdout
    assert f"run {result.run_id[:8]} started" in result.stdout
    metrics_line = next(li for li in result.stdout.splitlines() if li.startswith("metrics: "))
    shown = dict(part.split("=") for part in metrics_line.removeprefix("metrics: ").split(", "))
    assert {"accuracy", "f1", "auc", "train_accuracy"} <= set(shown)

    run = get_run(qs.home, result.run_id)
    assert run.state.value == "SUCCEEDED"
    with recorded(qs.home) as store:
        metrics = store.tracking.latest_metrics(run.id)
        experiment = store.projects.get_experiment(run.experiment_id)
        params = store.tracking.get_params(run.id)
    assert experiment.name == "demo"
    assert params["c"] == "0.5" and params["rows"] == "500"
    # the breast-cancer table is easy: a sane model scores far above chance
    assert 0.85 < metrics["accuracy"] <= 1.0
    assert float(shown["accuracy"]) == pytest.approx(metrics["accuracy"], abs=5e-4)
    assert states_by_node(steps_of(qs.home, run.id)) == {n: ["SUCCEEDED"] for n in NODES}


def test_second_identical_run_is_answered_from_the_cache(qs: Quickstart) -> None:
    result = qs.again
    assert result.returncode == 0, str(result)
    assert result.final_state == "SUCCEEDED"
    assert result.run_id != qs.first.run_id
    assert "every step was answered from the cache" in result.stdout
    assert "(0 ran, 5 cached)" in result.stdout
    assert "metrics: accuracy=" in result.stdout

    steps = steps_of(qs.home, result.run_id)
    assert states_by_node(steps) == {n: ["CACHED"] for n in NODES}
    with recorded(qs.home) as store:
        origins = {store.runs.get_step(s.cached_from).run_id for s in steps if s.cached_from}
        same_metrics = store.tracking.latest_metrics(result.run_id) == (
            store.tracking.latest_metrics(qs.first.run_id)
        )
    assert origins == {qs.first.run_id}
    assert same_metrics


def test_changing_c_reruns_only_train_and_evaluate(qs: Quickstart) -> None:
    result = qs.changed
    assert result.returncode == 0, str(result)
    assert result.final_state == "SUCCEEDED"
    assert "(3 ran, 2 cached)" in result.stdout
    assert "every step was answered from the cache" not in result.stdout
    assert states_by_node(steps_of(qs.home, result.run_id)) == {
        "load": ["CACHED"],
        "split": ["CACHED"],
        "train": ["SUCCEEDED"],
        "evaluate": ["SUCCEEDED"],
        "register": ["SUCCEEDED"],
    }
    with recorded(qs.home) as store:
        assert store.tracking.get_params(result.run_id)["c"] == "0.05"


# -- inspecting what was recorded -----------------------------------------------------


def test_runs_list_filters_by_experiment_and_state(qs: Quickstart) -> None:
    first, again, changed = qs.ids

    table = treadle(qs.home, "runs", "list", "--experiment", "demo")
    assert table.returncode == 0, str(table)
    for run_id in qs.ids:
        row = _rows(table.stdout, run_id[:8])
        assert len(row) == 1, str(table)
        assert row[0][2:4] == ["demo", "SUCCEEDED"]

    quiet = treadle(qs.home, "runs", "list", "--experiment", "demo", "-q")
    assert quiet.returncode == 0, str(quiet)
    # newest first
    assert quiet.stdout.split() == [changed[:8], again[:8], first[:8]]

    limited = treadle(qs.home, "runs", "list", "-e", "demo", "--limit", "2", "-q")
    assert limited.stdout.split() == [changed[:8], again[:8]]

    succeeded = treadle(qs.home, "runs", "list", "--state", "succeeded", "-q")
    assert set(succeeded.stdout.split()) >= {first[:8], again[:8], changed[:8]}
    failed = treadle(qs.home, "runs", "list", "--state", "FAILED", "-q")
    assert failed.returncode == 0 and failed.stdout.strip() == "", str(failed)


def test_runs_show_by_8_char_prefix(qs: Quickstart) -> None:
    run_id = qs.changed.run_id
    result = treadle(qs.home, "runs", "show", run_id[:8])
    assert result.returncode == 0, str(result)
    out = result.stdout
    assert f"run {run_id}" in out
    assert re.search(r"^state\s+SUCCEEDED\s*$", out, re.MULTILINE), out
    assert re.search(r"^experiment\s+demo\s*$", out, re.MULTILINE), out
    assert re.search(r"^params\s+.*\bc=0\.05\b.*\brows=500\b", out, re.MULTILINE), out
    assert re.search(r"^metrics\s+.*\baccuracy=", out, re.MULTILINE), out
    assert _rows(out, "load")[0][1].startswith("CACHED")
    assert _rows(out, "split")[0][1].startswith("CACHED")
    assert _rows(out, "train")[0][1] == "SUCCEEDED"
    assert "(model)" in _rows(out, "train")[0][4]
    assert "(metrics)" in _rows(out, "evaluate")[0][4]


def test_runs_compare_shows_the_differing_param(qs: Quickstart) -> None:
    first, _, changed = qs.ids
    result = treadle(qs.home, "runs", "compare", changed[:8], first[:8])
    assert result.returncode == 0, str(result)
    assert _rows(result.stdout, "param c") == [["param c", "0.05", "0.5"]]
    assert _rows(result.stdout, "param rows") == [["param rows", "500", "500"]]
    assert _rows(result.stdout, "state") == [["state", "SUCCEEDED", "SUCCEEDED"]]
    assert len(_rows(result.stdout, "metric accuracy")) == 1


def test_experiments_list_counts_runs(qs: Quickstart) -> None:
    result = treadle(qs.home, "experiments", "list")
    assert result.returncode == 0, str(result)
    row = _rows(result.stdout, "demo")
    assert len(row) == 1, str(result)
    assert row[0][1] == "3"


def test_artifacts_list_model_quiet_gives_the_model_id(qs: Quickstart) -> None:
    run_id = qs.first.run_id
    result = treadle(qs.home, "artifacts", "list", run_id[:8], "--kind", "model", "-q")
    assert result.returncode == 0, str(result)
    lines = result.stdout.split()
    assert len(lines) == 1 and SHORT_ID.match(lines[0]), str(result)
    assert lines[0] == _model_artifact_id(qs.home, run_id)[:8]

    table = treadle(qs.home, "artifacts", "list", run_id[:8])
    assert [r[1] for r in _rows(table.stdout, lines[0])] == ["train"]
    assert len(re.findall(r"│ (?:dataset|model|metrics) ", table.stdout)) == 5, str(table)


def test_lineage_shows_the_producing_step_and_the_consumers(qs: Quickstart) -> None:
    first, again, _ = qs.ids
    model = _model_artifact_id(qs.home, first)
    result = treadle(qs.home, "lineage", model[:8])
    assert result.returncode == 0, str(result)
    out = result.stdout
    assert f"artifact {model}" in out
    produced, _, consumed = out.partition("consumed by")
    assert f"← step train run {first[:8]} SUCCEEDED" in produced
    # upstream of train: the split that made its training set, and the load before it
    assert "← step split" in produced and "← step load" in produced
    assert f"reused from the cache by step train in run {again[:8]}" in produced
    assert f"→ step evaluate (input model) run {first[:8]} SUCCEEDED" in consumed
    assert f"→ step evaluate (input model) run {again[:8]} CACHED" in consumed
    assert "(metrics," in consumed


def test_runs_logs_of_a_cached_step_show_the_original_output(qs: Quickstart) -> None:
    first, again, _ = qs.ids
    result = treadle(qs.home, "runs", "logs", again[:8], "--step", "split")
    assert result.returncode == 0, str(result)
    assert f"(cached: the output of run {first[:8]})" in result.stdout
    assert "train rows: 375, test rows: 125" in result.stdout
    assert "evaluate" not in result.stdout


def test_db_commands_on_a_used_home(qs: Quickstart) -> None:
    from treadle.store.migrate import HEAD_REVISION

    current = treadle(qs.home, "db", "current")
    assert current.returncode == 0, str(current)
    assert str(qs.home / "treadle.db") in current.stdout
    assert f"revision {HEAD_REVISION} (this treadle expects {HEAD_REVISION})" in current.stdout
    upgrade = treadle(qs.home, "db", "upgrade")
    assert upgrade.returncode == 0, str(upgrade)
    assert f"schema is current (revision {HEAD_REVISION})" in upgrade.stdout


# -- the process executor ---------------------------------------------------------------


@pytest.fixture(scope="module")
def in_processes(qs: Quickstart) -> Result:
    """The first run again, every step computed, each in its own process."""
    return treadle(
        qs.home,
        "run",
        QUICKSTART,
        "-p",
        "c=0.5",
        "-e",
        "processes",
        "--executor",
        "process",
        "--no-cache",
    )


def test_process_executor_runs_the_quickstart_with_the_same_step_records(
    qs: Quickstart, in_processes: Result
) -> None:
    result = in_processes
    assert result.returncode == 0, str(result)
    assert result.final_state == "SUCCEEDED"
    assert "(5 ran, 0 cached)" in result.stdout
    run = get_run(qs.home, result.run_id)
    assert run.executor == "process"
    threads, procs = steps_of(qs.home, qs.first.run_id), steps_of(qs.home, run.id)
    assert states_by_node(procs) == states_by_node(threads) == {n: ["SUCCEEDED"] for n in NODES}
    assert [(s.node, s.step_name) for s in procs] == [(s.node, s.step_name) for s in threads]
    with recorded(qs.home) as store:

        def outputs(run_id: str) -> dict[tuple[str, str], tuple[str, str, str]]:
            return {
                (s.node, name): (a.kind, a.materializer, a.sha256)
                for s, name, a in store.artifacts.run_artifacts(run_id)
            }

        by_threads, by_procs = outputs(qs.first.run_id), outputs(run.id)
        metrics_equal = store.tracking.latest_metrics(run.id) == (
            store.tracking.latest_metrics(qs.first.run_id)
        )
    assert by_procs.keys() == by_threads.keys()
    for key, (kind, materializer, sha) in by_threads.items():
        assert by_procs[key][:2] == (kind, materializer)
        # skops archives are not byte-stable, and each registration is a new version
        # number; data and metrics are the same bytes
        if kind != "model" and key[0] != "register":
            assert by_procs[key][2] == sha, key
    assert metrics_equal


def test_process_executor_captures_step_output_in_the_logs(
    qs: Quickstart, in_processes: Result
) -> None:
    logs = treadle(qs.home, "runs", "logs", in_processes.run_id[:8], "--step", "split")
    assert logs.returncode == 0, str(logs)
    assert "train rows: 375, test rows: 125" in logs.stdout, str(logs)
    assert "train rows:" not in in_processes.stdout


# -- a corrupt artifact -------------------------------------------------------------------


def _corrupt_test_set(qs: Quickstart, tmp_path: Path) -> tuple[Path, Path, str]:
    """A copy of the quickstart home whose test set (split's second output) is garbage;
    the copy keeps the shared store intact for the other tests."""
    home = tmp_path / "home"
    shutil.copytree(qs.home, home)
    with recorded(home) as store:
        test_set = next(
            a
            for s, name, a in store.artifacts.run_artifacts(qs.first.run_id)
            if (s.node, name) == ("split", "output_1")
        )
    obj = home / "artifacts" / "objects" / test_set.sha256[:2] / test_set.sha256
    assert obj.is_file()
    obj.chmod(0o644)  # objects are written read-only
    obj.write_bytes(b"not a parquet file any more")
    return home, obj, test_set.sha256


def test_a_corrupt_upstream_artifact_is_reported_clearly(qs: Quickstart, tmp_path: Path) -> None:
    home, obj, sha = _corrupt_test_set(qs, tmp_path)
    runs_before = len(all_runs(home))

    # a new c re-trains; evaluate then reads the (cached, now corrupt) test set
    result = treadle(home, "run", QUICKSTART, "-p", "c=0.3")
    # the exit code of a failed run is test_cli_failure.py's business (a known bug)
    assert "Traceback" not in result.output, str(result)
    assert result.final_state == "FAILED", str(result)
    text = squash(result.stdout)
    assert "is corrupt" in text and f"not {sha[:12]}" in text, str(result)
    assert "CorruptArtifactError" in text
    assert "delete the file and re-run" in text
    assert len(all_runs(home)) == runs_before + 1
    run = get_run(home, result.run_id)
    assert run.state.value == "FAILED"
    assert "is corrupt" in (run.error or "")
    assert states_by_node(steps_of(home, run.id))["evaluate"] == ["FAILED"]

    # what the hint says: without the object, split runs again and writes it anew
    obj.unlink()
    healed = treadle(home, "run", QUICKSTART, "-p", "c=0.3", "--no-cache")
    assert healed.returncode == 0, str(healed)
    assert healed.final_state == "SUCCEEDED"
    assert obj.is_file()


def test_rerunning_with_no_cache_repairs_a_corrupt_object(qs: Quickstart, tmp_path: Path) -> None:
    home, _, _ = _corrupt_test_set(qs, tmp_path)
    result = treadle(home, "run", QUICKSTART, "-p", "c=0.3", "--no-cache")
    assert "(5 ran, 0 cached" in result.stdout, str(result)
    assert result.final_state == "SUCCEEDED", str(result)
