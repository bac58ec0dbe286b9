"""`--help` of the real executable: every command listed with its one-line help, and
`treadle run --help` explaining the options a first run needs. Also `version` and the
`db` group on a fresh home."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cli_support import Result, treadle
from sqlalchemy.engine import make_url

import treadle as treadle_package
from treadle.store.migrate import HEAD_REVISION

# The command tree is the CLI's contract; the help texts are matched by their start so
# a reworded tail does not break the test, but a missing or empty one does.
ROOT = {
    "run": "Run a pipeline",
    "lineage": "Show where an artifact came from",
    "version": "Print treadle's version",
    "runs": "Inspect and resume runs",
    "experiments": "List experiments",
    "artifacts": "List the artifacts of runs",
    "db": "Manage the metadata database schema",
    "models": "Registered models, their versions and aliases",
    "serve": "Serve a registered model over HTTP",
    "deploy": "Create or change a managed deployment",
    "deployments": "Managed deployments: revisions, traffic, rollback",
    "up": "Start the platform server",
    "projects": "Projects",
    "members": "Members of the current project",
    "users": "Users of a treadle server",
    "tokens": "API tokens",
    "pipeline": "Pipeline CI and CD",
    "init": "Write a CI workflow",
    "schedules": "Cron schedules that run a pipeline",
    "triggers": "Triggers that turn events",
    "events": "Events that triggers act on",
    "monitor": "Monitors of deployments",
    "policies": "Policies: the closed loop",
    "demo": "Run the whole loop on this machine",
    "compile": "Compile a pipeline to a Kubeflow Pipelines",
    "kfp": "Kubeflow Pipelines: submit",
}
GROUPS = {
    "pipeline": {
        "build": "Check the pipeline, make a smoke run",
        "test": "Run the project's step tests",
        "deploy": "Register a package on an environment's server",
        "versions": "A pipeline's versions",
        "rollback": "Make the previous version current",
        "run": "Run a pipeline's current version on a server",
    },
    "runs": {
        "list": "List runs",
        "show": "Show a run",
        "logs": "Print what each step wrote",
        "metrics": "Print metric histories",
        "compare": "Compare runs",
        "resume": "Re-run only the steps of a run that did not finish",
        "why": "Say why a run happened",
    },
    "schedules": {
        "create": "Create a cron schedule",
        "list": "List the project's schedules",
        "fires": "What each due time did",
        "pause": "Stop firing a schedule",
        "resume": "Fire a paused schedule again",
        "delete": "Delete a schedule",
    },
    "triggers": {
        "create": "Create a trigger",
        "list": "List the project's triggers",
        "fire": "Fire a trigger by hand",
        "fires": "What each event did",
        "enable": "Act on events again",
        "disable": "Stop acting on events",
        "delete": "Delete a trigger",
    },
    "events": {"list": "List recent events"},
    "kfp": {"submit": "Start a run of a compiled pipeline"},
    "monitor": {
        "create": "Watch a deployment's predictions",
        "list": "List monitors",
        "windows": "The monitor's latest windows",
        "alerts": "Alerts, newest first",
        "report": "Write a self-contained HTML report",
        "delete": "Delete a monitor",
    },
    "policies": {
        "apply": "Create or change a policy",
        "list": "List the project's policies",
        "runs": "What policies did",
        "enable": "Act on events again",
        "disable": "Stop acting on new events",
        "delete": "Delete a policy",
    },
    "experiments": {"list": "List the project's experiments"},
    "artifacts": {"list": "List the artifacts a run's steps produced"},
    "db": {"upgrade": "Apply pending migrations", "current": "Print the schema revision"},
}

PANEL_ROW = re.compile(r"^│ (\S*)\s+(.*?)\s*│$")


def _commands(result: Result) -> dict[str, list[str]]:
    """The Commands panel: each command with its help text, one entry per printed line."""
    assert result.returncode == 0, str(result)
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "Commands" in line and "╭" in line)
    out: dict[str, list[str]] = {}
    current = ""
    for line in lines[start + 1 :]:
        if line.startswith("╰"):
            break
        match = PANEL_ROW.match(line)
        assert match, f"unexpected line in the Commands panel: {line!r}"
        name, text = match.groups()
        if name:
            current = name
            out[current] = [text]
        else:
            out[current].append(text)
    return out


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("help") / "home"


def test_root_help_lists_every_command_with_its_help(home: Path) -> None:
    result = treadle(home, "--help")
    assert "Usage: treadle [OPTIONS] COMMAND [ARGS]..." in result.stdout
    assert "TREADLE_HOME" in result.stdout and "--debug" in result.stdout
    assert "--url" in result.stdout and "TREADLE_URL" in result.stdout
    commands = _commands(result)
    assert set(commands) == set(ROOT)
    for name, start in ROOT.items():
        assert commands[name][0].startswith(start), (name, commands[name])
    # asking for help must not create a store
    assert not home.exists()


@pytest.mark.parametrize("group", list(GROUPS))
def test_group_help_lists_its_commands(home: Path, group: str) -> None:
    commands = _commands(treadle(home, group, "--help"))
    assert set(commands) == set(GROUPS[group])
    for name, start in GROUPS[group].items():
        assert commands[name][0].startswith(start), (group, name, commands[name])


def test_every_command_help_is_one_line(home: Path) -> None:
    commands = _commands(treadle(home, "--help"))
    for group in GROUPS:
        commands.update(
            {f"{group} {k}": v for k, v in _commands(treadle(home, group, "--help")).items()}
        )
    assert {k: v for k, v in commands.items() if len(v) != 1} == {}


def test_run_help_explains_the_options(home: Path) -> None:
    result = treadle(home, "run", "--help")
    assert result.returncode == 0, str(result)
    rows = {
        m.group(1): line
        for line in result.stdout.splitlines()
        if (m := re.search(r"(--[\w-]+)", line))
    }
    assert re.search(r"--param\s+-p\b.*KEY=VALUE", rows["--param"]), rows["--param"]
    assert re.search(r"--experiment\s+-e\b.*[Ee]xperiment", rows["--experiment"])
    assert "cache" in rows["--no-cache"]
    assert "local" in rows["--executor"] and "process" in rows["--executor"]
    assert "path/to/file.py" in result.stdout  # the target argument
    assert "treadle runs resume" in result.stdout


def test_version_prints_the_package_version(home: Path) -> None:
    result = treadle(home, "version")
    assert result.returncode == 0, str(result)
    assert result.stdout.strip() == treadle_package.__version__


def test_db_current_and_upgrade_on_a_fresh_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    db_file = home / "treadle.db"

    empty = treadle(home, "db", "current")
    assert empty.returncode == 0, str(empty)
    assert empty.stdout.strip() == (
        f"sqlite:///{db_file}: revision (empty) (this treadle expects {HEAD_REVISION})"
    )

    upgraded = treadle(home, "db", "upgrade")
    assert upgraded.returncode == 0, str(upgraded)
    assert upgraded.stdout.strip() == f"schema upgraded: empty → {HEAD_REVISION}"

    current = treadle(home, "db", "current")
    assert f"revision {HEAD_REVISION} (this treadle expects" in current.stdout

    again = treadle(home, "db", "upgrade")
    assert again.stdout.strip() == f"schema is current (revision {HEAD_REVISION})"

    empty_lists = treadle(home, "runs", "list"), treadle(home, "experiments", "list")
    assert "no runs yet" in empty_lists[0].stdout
    assert "no experiments yet" in empty_lists[1].stdout


@pytest.mark.postgres
def test_db_current_does_not_print_the_database_password(tmp_path: Path, pg_url: str) -> None:
    # the test server trusts every local login, so any password connects
    with_password = (
        make_url(pg_url)
        .set(username="postgres", password="s3cret")
        .render_as_string(hide_password=False)
    )
    assert "s3cret" in with_password
    result = treadle(tmp_path / "home", "db", "current", env={"TREADLE_DB_URL": with_password})
    assert result.returncode == 0, str(result)
    assert "revision (empty)" in result.stdout
    assert "s3cret" not in result.output, str(result)
