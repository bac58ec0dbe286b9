"""Policies written in Python: the builder functions of `treadle.loop`, and `.py` policy
files read by `read_policies` (what `treadle policies apply` and `treadle demo --policy`
use).

The regression example's Python twin must give the same document, and the same checked
policy, as its YAML. Files are real files in a temporary folder, imported for real; the
refusals name the file and the exception, what to define, or the field (with the same
message as the YAML's).
"""

from __future__ import annotations

import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from treadle.errors import InvalidInputError, NotFoundError
from treadle.loop import (
    canary,
    define_policy,
    from_event,
    on_alert,
    on_event,
    promote,
    register,
    retrain,
)
from treadle.loop.policy import Canary, Promote, load_text, parse, read_policies

REPO = Path(__file__).resolve().parents[2]
REGRESSION = REPO / "examples" / "loop" / "regression"

# the same minimal policy three ways: YAML, a dict, the builder
MINIMAL_YAML = """\
name: refit
on:
  where: {monitor: watch}
run:
  pipeline: training
register:
  model: m
canary:
  deployment: api
"""
MINIMAL_DICT = """\
policy = {
    "name": "refit",
    "on": {"where": {"monitor": "watch"}},
    "run": {"pipeline": "training"},
    "register": {"model": "m"},
    "canary": {"deployment": "api"},
}
"""


def write(folder: Path, text: str, name: str = "loop.py") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def refusal(path: Path) -> InvalidInputError:
    with pytest.raises(InvalidInputError) as caught:
        read_policies(path)
    return caught.value


def yaml_refusal(text: str) -> InvalidInputError:
    with pytest.raises(InvalidInputError) as caught:
        load_text(text)
    return caught.value


# -- the same policy as the YAML ------------------------------------------------------------


def test_the_regression_examples_python_twin_is_its_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROGRESSION_MAX_RMSE", raising=False)
    [from_python] = read_policies(REGRESSION / "policy.py")
    [from_yaml] = read_policies(REGRESSION / "policy.yaml")
    assert from_yaml == load_text((REGRESSION / "policy.yaml").read_text())
    assert parse(from_python) == parse(from_yaml)
    # every field is spelled out in the YAML, so the stored documents are equal too
    assert from_python == from_yaml
    policy = parse(from_python)
    assert policy.require == ["rmse <= 80"]
    assert policy.canary == Canary("progression-api", 30.0, 120, 120.0)
    assert policy.promote == Promote("champion", "rmse", 0.0)


def test_the_builder_fills_in_the_yaml_defaults() -> None:
    built = define_policy(
        "refit",
        on=on_alert(monitor="watch"),
        run=retrain("training"),
        register=register("m"),
        canary=canary("api"),
    )
    assert parse(built) == parse(load_text(MINIMAL_YAML))
    assert built["canary"] == {"deployment": "api", "percent": 10, "requests": 100, "timeout": 600}
    assert built["register"] == {"model": "m", "alias": "challenger", "require": []}
    assert "promote" not in built
    # without `on`, every monitor alert, as a YAML file without `on:`
    anywhere = define_policy("p", run=retrain("t"), register=register("m"))
    assert anywhere["on"] == on_event() == {"event": "monitor.alert", "where": {}}
    assert promote() == {"alias": "champion", "metric": "accuracy", "margin": 0.0}


def test_the_sections_read_as_the_yaml_writes_them() -> None:
    assert on_alert("watch", "drift", where={"deployment": "api"}) == {
        "event": "monitor.alert",
        "where": {"deployment": "api", "monitor": "watch", "alert": "drift"},
    }
    assert on_event("run.finished", where={"pipeline": "etl"})["event"] == "run.finished"
    assert from_event("window.start") == "$event.window.start"
    run = retrain("training", params={"since": from_event("window.start"), "alpha": 0.5})
    assert run == {"pipeline": "training", "params": {"since": "$event.window.start", "alpha": 0.5}}
    # one condition, or several in any sequence, become the YAML's list
    assert register("m", require="auc >= 0.7")["require"] == ["auc >= 0.7"]
    assert register("m", require=("auc >= 0.7", "f1 >= 0.6"))["require"] == [
        "auc >= 0.7",
        "f1 >= 0.6",
    ]
    policy = parse(define_policy("p", run=run, register=register("m", alias="candidate")))
    assert policy.params == {"since": "$event.window.start", "alpha": "0.5"}
    assert policy.alias == "candidate"


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: define_policy("p", run=retrain(" "), register=register("m")), "run.pipeline"),
        (
            lambda: define_policy(
                "p", run=retrain("t"), register=register("m"), canary=canary("d", percent=120)
            ),
            "canary.percent",
        ),
        (
            lambda: define_policy(
                "p", run=retrain("t"), register=register("m"), promote=promote(metric="rmse")
            ),
            "needs a canary section",
        ),
        (
            lambda: define_policy("p", run=retrain("t"), register=register("m", require="a >>= 1")),
            "register.require",
        ),
        (
            lambda: define_policy(
                "p", run=retrain("t", params={"at": Path("/data")}), register=register("m")
            ),
            "run.params.at is a PosixPath",
        ),
        (lambda: from_event(""), "from_event needs a field"),
    ],
)
def test_the_builder_refuses_a_bad_field_by_name(build: Any, field: str) -> None:
    with pytest.raises(InvalidInputError, match=field):
        build()


# -- Python policy files ----------------------------------------------------------------------


def test_a_dict_in_the_yamls_shape_is_a_policy(tmp_path: Path) -> None:
    [spec] = read_policies(write(tmp_path, MINIMAL_DICT))
    assert spec == load_text(MINIMAL_YAML)
    assert parse(spec) == parse(load_text(MINIMAL_YAML))


def test_policies_defines_several_in_one_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        from treadle.loop import define_policy, on_alert, register, retrain

        MONITORS = {"eu-watch": "eu-model", "us-watch": "us-model"}

        policies = [
            define_policy(
                f"refit-{model}",
                on=on_alert(monitor=monitor, alert="drift"),
                run=retrain("training", params={"region": monitor[:2]}),
                register=register(model, require=["rmse <= 80"]),
            )
            for monitor, model in MONITORS.items()
        ]
        # a plain dict may stand next to built ones
        policies.append({"name": "by-hand", "run": {"pipeline": "t"}, "register": {"model": "m"}})
        """,
    )
    specs = read_policies(path)
    assert [s["name"] for s in specs] == ["refit-eu-model", "refit-us-model", "by-hand"]
    assert [parse(s).where for s in specs] == [
        {"monitor": "eu-watch", "alert": "drift"},
        {"monitor": "us-watch", "alert": "drift"},
        {},
    ]
    assert parse(specs[1]).params == {"region": "us"}


def test_a_policy_file_is_a_fresh_module_with_its_folder_importable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sibling = f"limits_{uuid.uuid4().hex[:8]}"
    write(tmp_path, "MAX_RMSE = 80\n", f"{sibling}.py")
    path = write(
        tmp_path,
        f"""
        import os

        from {sibling} import MAX_RMSE
        from treadle.loop import define_policy, register, retrain

        policy = define_policy(
            os.environ.get("LOOP_NAME", "refit"),
            run=retrain("training"),
            register=register("m", require=[f"rmse <= {{MAX_RMSE}}"]),
        )
        """,
    )
    modules, search_path = set(sys.modules), list(sys.path)
    monkeypatch.setenv("LOOP_NAME", "refit-a")
    [first] = read_policies(path)
    monkeypatch.setenv("LOOP_NAME", "refit-b")
    [second] = read_policies(path)  # run again, not a module imported before
    assert (first["name"], second["name"]) == ("refit-a", "refit-b")
    assert first["register"]["require"] == ["rmse <= 80"]
    assert sys.path == search_path
    assert sibling in sys.modules
    # the policy module itself is not kept
    assert not [m for m in set(sys.modules) - modules if m.startswith("treadle_policy_")]


def test_a_yaml_file_is_read_as_before(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL_YAML, "loop.yaml")
    assert read_policies(path) == [load_text(MINIMAL_YAML)]
    with pytest.raises(NotFoundError, match="no policy file"):
        read_policies(tmp_path / "missing.py")


# -- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "said", "line"),
    [
        ("x = 1\nraise RuntimeError('no thresholds here')\n", "RuntimeError: no thresholds", 2),
        ("import no_such_module_for_policies\n", "ModuleNotFoundError: No module named", 1),
        ("policy = {\n  'name':\n", "SyntaxError", 1),
        ("import sys\n\nsys.exit(3)\n", "SystemExit: 3", 3),
    ],
)
def test_a_file_that_fails_to_import_is_named_with_its_exception(
    tmp_path: Path, text: str, said: str, line: int
) -> None:
    path = write(tmp_path, text)
    error = refusal(path)
    assert error.message.startswith(f"policy file {path} failed to import: ")
    assert said in error.message
    assert f"at {path}:{line}" in error.hint


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("x = 1\n", "defines neither `policy` nor `policies`"),
        (f"{MINIMAL_DICT}policies = [policy]\n", "defines both `policy` and `policies`"),
        ("policy = 'refit'\n", "`policy` is a str, not a policy"),
        ("policy = None\n", "`policy` is None, not a policy"),
        (f"{MINIMAL_DICT}policy = [policy]\n", "`policy` is a list, not a policy"),
        (
            f"{MINIMAL_DICT}policies = policy\ndel policy\n",
            "`policies` must be a list of policies, not a dict",
        ),
        ("policies = []\n", "`policies` is an empty list"),
        (
            f"{MINIMAL_DICT}policies = [policy, 3]\ndel policy\n",
            "`policies[1]` is an int, not a policy",
        ),
    ],
)
def test_a_file_without_a_policy_says_what_to_define(tmp_path: Path, text: str, said: str) -> None:
    error = refusal(write(tmp_path, text))
    assert said in error.message
    assert str(tmp_path) in error.message
    assert error.hint  # every one says what to define


def test_what_to_define_names_the_builder(tmp_path: Path) -> None:
    error = refusal(write(tmp_path, "threshold = 0.9\n"))
    assert "policy = define_policy(...)" in error.hint and "policies = [...]" in error.hint


def test_a_bad_field_is_the_yamls_error_and_says_where(tmp_path: Path) -> None:
    expected = yaml_refusal(
        MINIMAL_YAML.replace("deployment: api", "deployment: api\n  percent: 120")
    )
    assert expected.message == "policy: canary.percent must be a number from 0.1 to 99.9"

    built = write(
        tmp_path,
        """
        from treadle.loop import canary, define_policy, register, retrain

        policy = define_policy(
            "refit",
            run=retrain("training"),
            register=register("m"),
            canary=canary("api", percent=120),
        )
        """,
    )
    error = refusal(built)
    assert error.message == expected.message
    assert f"at {built}:4" in error.hint  # where define_policy was called

    as_dict = write(tmp_path, MINIMAL_DICT.replace('"api"}', '"api", "percent": 120}'), "d.py")
    error = refusal(as_dict)
    assert error.message == expected.message and f"in `policy` of {as_dict}" in error.hint

    several = write(
        tmp_path,
        MINIMAL_DICT + "policies = [policy, {**policy, 'name': 'x', 'retry': 3}]\ndel policy\n",
        "several.py",
    )
    error = refusal(several)
    assert error.message == yaml_refusal(MINIMAL_YAML + "retry: 3\n").message
    assert error.message == "policy: 'retry' is not a policy section"
    assert f"in `policies[1]` of {several}" in error.hint


def test_a_value_json_cannot_hold_is_refused_by_its_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "import datetime\n"
        + MINIMAL_DICT.replace(
            '"pipeline": "training"}',
            '"pipeline": "training", "params": {"since": datetime.date(2024, 1, 1)}}',
        ),
    )
    error = refusal(path)
    assert error.message == "policy: run.params.since is a date, not a value a policy can hold"
    numbers = write(tmp_path, MINIMAL_DICT + "policy['on']['where'][3] = 'x'\n", "keys.py")
    assert "on.where has the key 3" in refusal(numbers).message


def test_two_policies_of_one_name_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL_DICT + "policies = [policy, dict(policy)]\ndel policy\n")
    error = refusal(path)
    assert "`policies[0]` and `policies[1]` are both named 'refit'" in error.message
