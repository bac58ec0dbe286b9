"""Tracking in a plain script: `start_run`, params, metrics and artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import treadle
from treadle import log_artifact, log_metric, log_metrics, log_param, log_params, start_run
from treadle.config import Settings
from treadle.engine import RunOptions, run_pipeline
from treadle.errors import ConflictError, InvalidInputError, TreadleError
from treadle.store import Store, materializers
from treadle.tracking.context import FLUSH_ROWS
from treadle.types import RunState


def test_start_run_records_params_metrics_and_ends_succeeded(
    store: Store, settings: Settings
) -> None:
    with start_run(experiment="tracking-test", name="script", params={"lr": 0.1}) as run:
        assert treadle.active_run_id() == run.id
        assert store.runs.get_run(run.id).state is RunState.RUNNING
        log_param("layers", 3)
        log_params({"optimizer": "adam", "nesterov": True, "sizes": [1, 2]})
        log_metric("loss", 0.9)

    assert treadle.active_run_id() is None
    record = store.runs.get_run(run.id)
    assert record.state is RunState.SUCCEEDED
    assert record.name == "script"
    assert record.ended_at is not None and record.error is None
    assert record.pipeline_version_id is None
    experiment = store.projects.get_experiment(record.experiment_id)
    assert experiment.name == "tracking-test"
    assert run.params == {
        "lr": "0.1",
        "layers": "3",
        "optimizer": "adam",
        "nesterov": "true",
        "sizes": "[1, 2]",
    }
    assert run.metrics == {"loss": 0.9}
    assert run.state is RunState.SUCCEEDED


def test_param_cannot_change_once_logged(store: Store, settings: Settings) -> None:
    with start_run() as run:
        log_param("seed", 1)
        log_param("seed", 1)  # the same value again is fine
        with pytest.raises(ConflictError, match="'seed'"):
            log_param("seed", 2)
    assert run.params == {"seed": "1"}


def test_metric_steps_count_up_per_key_and_explicit_steps_are_kept(
    store: Store, settings: Settings
) -> None:
    with start_run() as run:
        log_metric("loss", 1.0)
        log_metric("loss", 0.5)
        log_metric("acc", 0.1)
        log_metric("loss", 0.25)
        log_metric("acc", 0.2, step=10)
        log_metric("acc", 0.3)
        log_metrics({"loss": 0.125, "acc": 0.4})

    loss = [(m.step, m.value) for m in store.tracking.metric_history(run.id, "loss")]
    acc = [(m.step, m.value) for m in store.tracking.metric_history(run.id, "acc")]
    assert loss == [(0, 1.0), (1, 0.5), (2, 0.25), (3, 0.125)]
    assert acc == [(0, 0.1), (10, 0.2), (11, 0.3), (12, 0.4)]
    assert run.metrics == {"loss": 0.125, "acc": 0.4}
    assert all(m.step_run_id is None for m in store.tracking.metric_history(run.id))


def test_integer_and_bool_metrics_are_stored_as_numbers(store: Store, settings: Settings) -> None:
    with start_run() as run:
        log_metric("epochs", 3)
        log_metric("converged", True)
    assert run.metrics == {"epochs": 3.0, "converged": 1.0}


def test_log_artifact_of_a_value_and_of_a_file(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    report = tmp_path / "report.txt"
    report.write_text("all good\n")
    with start_run() as run:
        value_id = log_artifact({"weights": [1, 2, 3]}, name="weights")
        file_id = log_artifact(report)
        path_text_id = log_artifact(str(report), name="again")

    value = store.artifacts.get_artifact(value_id)
    assert (value.name, value.kind, value.materializer) == ("weights", "value", "json")
    assert value.run_id == run.id
    assert value.producer_step_run_id is None
    loaded = materializers.load(value.materializer, value.sha256, store.objects, allow_pickle=False)
    assert loaded == {"weights": [1, 2, 3]}

    saved_file = store.artifacts.get_artifact(file_id)
    assert (saved_file.name, saved_file.kind, saved_file.materializer) == (
        "report.txt",
        "file",
        "file",
    )
    assert saved_file.size == len("all good\n")
    assert store.objects.get_bytes(saved_file.sha256) == b"all good\n"
    # a str is taken as a path, like a Path
    assert store.artifacts.get_artifact(path_text_id).sha256 == saved_file.sha256


def test_log_artifact_refuses_unknown_kind_and_missing_file(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    with start_run():
        with pytest.raises(InvalidInputError, match="'blob'"):
            log_artifact({"a": 1}, kind="blob")
        with pytest.raises(InvalidInputError, match="not a file"):
            log_artifact(tmp_path / "missing.csv")


def test_block_raising_leaves_the_run_failed_with_the_traceback(
    store: Store, settings: Settings
) -> None:
    with pytest.raises(ZeroDivisionError), start_run() as run:
        log_metric("before", 1.0)
        _ = 1 / 0

    record = store.runs.get_run(run.id)
    assert record.state is RunState.FAILED
    assert record.error is not None
    assert record.error.startswith("Traceback (most recent call last):")
    assert "ZeroDivisionError: division by zero" in record.error
    # what was logged before the failure is kept
    assert run.metrics == {"before": 1.0}
    assert treadle.active_run_id() is None


def test_keyboard_interrupt_leaves_the_run_cancelled(store: Store, settings: Settings) -> None:
    with pytest.raises(KeyboardInterrupt), start_run() as run:
        raise KeyboardInterrupt
    assert store.runs.get_run(run.id).state is RunState.CANCELLED


@pytest.mark.parametrize(
    "call",
    [
        lambda: log_metric("loss", 1.0),
        lambda: log_param("lr", 0.1),
        lambda: log_artifact({"a": 1}),
    ],
    ids=["log_metric", "log_param", "log_artifact"],
)
def test_logging_outside_a_run_is_an_error_with_a_hint(call: object, home: Path) -> None:
    with pytest.raises(TreadleError) as info:
        call()  # type: ignore[operator]
    assert "needs an active run" in info.value.message
    assert "start_run" in info.value.hint
    assert "@step" in info.value.hint


@pytest.mark.parametrize("value", ["high", None, [1.0], {"v": 1}])
def test_non_numeric_metric_names_the_key(store: Store, settings: Settings, value: object) -> None:
    with start_run() as run:
        with pytest.raises(InvalidInputError) as info:
            log_metric("accuracy", value)  # type: ignore[arg-type]
        assert "'accuracy'" in info.value.message
    assert run.metrics == {}


def test_bad_metric_key_and_step_are_refused(store: Store, settings: Settings) -> None:
    with start_run():
        with pytest.raises(InvalidInputError):
            log_metric("", 1.0)
        with pytest.raises(InvalidInputError):
            log_metric("k" * 251, 1.0)
        with pytest.raises(InvalidInputError, match="'loss'"):
            log_metric("loss", 1.0, step=1.5)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match="'loss'"):
            log_metric("loss", 1.0, step=True)


def test_ten_thousand_metrics_are_all_stored_when_the_run_ends(
    store: Store, settings: Settings
) -> None:
    with start_run() as run:
        for i in range(10_000):
            log_metric("loss", 1.0 / (i + 1))
        for _ in range(7):
            log_metric("lr", 0.1)
        # a long loop must not hold every row in memory until the end
        assert len(store.tracking.metric_history(run.id)) >= 10_007 - FLUSH_ROWS

    rows = store.tracking.metric_history(run.id)
    assert len(rows) == 10_007
    loss = store.tracking.metric_history(run.id, "loss")
    assert [m.step for m in loss] == list(range(10_000))
    assert loss[-1].value == pytest.approx(1.0 / 10_000)
    assert len(store.tracking.metric_history(run.id, "lr")) == 7


def test_start_run_with_explicit_settings(tmp_path: Path) -> None:
    home = tmp_path / "elsewhere"
    settings = Settings(
        home=home, db_url=f"sqlite:///{home / 'treadle.db'}", artifact_url=str(home / "objects")
    )
    with start_run(settings=settings, experiment="explicit") as run:
        log_metric("m", 2.0)
    assert (home / "treadle.db").is_file()
    assert run.state is RunState.SUCCEEDED
    assert run.metrics == {"m": 2.0}


def test_nested_start_run_logs_to_the_inner_run(store: Store, settings: Settings) -> None:
    with start_run(name="outer") as outer:
        log_metric("where", 1.0)
        with start_run(name="inner") as inner:
            log_metric("where", 2.0)
        log_metric("after", 3.0)
    assert inner.metrics == {"where": 2.0}
    assert outer.metrics == {"where": 1.0, "after": 3.0}


# -- logging inside a step -------------------------------------------------------------


@treadle.step
def trained(n: int) -> int:
    log_artifact({"lr": 0.1, "n": n}, name="config")
    log_metric("seen", float(n))
    return n * 2


@treadle.pipeline
def logging_flow(n: int = 2) -> None:
    trained(n)


def test_log_artifact_inside_a_step_is_linked_to_the_step_run(store: Store) -> None:
    result = run_pipeline(logging_flow, {"n": 2}, store, RunOptions())
    assert result.state is RunState.SUCCEEDED, result.error
    step_run = result.steps["trained"]
    produced = {name: art for sr, name, art in store.artifacts.run_artifacts(result.id)}
    config = produced["logged:config"]
    assert config.producer_step_run_id == step_run.id
    assert json.loads(store.objects.get_bytes(config.sha256)) == {"lr": 0.1, "n": 2}
    assert [(m.key, m.step_run_id) for m in result.metric_history("seen")] == [
        ("seen", step_run.id)
    ]


def test_step_output_keeps_its_key_when_the_step_logs_an_artifact(store: Store) -> None:
    result = run_pipeline(logging_flow, {"n": 2}, store, RunOptions())
    assert result.outputs["trained"] == 4
