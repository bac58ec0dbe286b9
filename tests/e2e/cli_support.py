"""Running the real `treadle` executable and reading back what its store recorded.

Every call is a fresh process with its own environment, so nothing a test sets leaks
into the next one and the console script's entry point (exit codes, stderr) is what
gets tested, not an in-process stand-in.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from treadle.config import load_settings
from treadle.store import Store, open_store
from treadle.store.records import RunRecord, StepRunRecord

REPO = Path(__file__).resolve().parents[2]
RESOURCES = REPO / "tests" / "resources"
QUICKSTART = "examples/quickstart/pipeline.py"
FRAGILE = str(RESOURCES / "cli_fragile.py")
NO_PIPELINE = str(RESOURCES / "cli_no_pipeline.py")
USER = "e2e"
# The executable next to the interpreter running pytest: the virtualenv's console script.
EXECUTABLE = Path(sys.executable).with_name("treadle")

# The closing line of `treadle run` / `treadle runs resume`: the full id and the state.
SUMMARY = re.compile(r"^run ([0-9a-f]{32}) (SUCCEEDED|FAILED|CANCELLED) in ", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def run_id(self) -> str:
        """The full run id from the summary line; fails the test if there is none."""
        found = SUMMARY.findall(self.stdout)
        assert len(found) == 1, f"expected one summary line:\n{self}"
        return str(found[0][0])

    @property
    def final_state(self) -> str:
        found = SUMMARY.findall(self.stdout)
        assert len(found) == 1, f"expected one summary line:\n{self}"
        return str(found[0][1])

    def __str__(self) -> str:
        return (
            f"$ treadle {' '.join(self.args)}\nexit {self.returncode}\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )


def cli_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The parent's environment minus every TREADLE_* setting, plus a home of the test's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TREADLE_") and k not in ("COLUMNS", "LINES", "FORCE_COLOR")
    }
    env.update(
        TREADLE_HOME=str(home),
        TREADLE_USER=USER,
        # wide enough that help rows and one-line errors never wrap mid-sentence
        COLUMNS="200",
        NO_COLOR="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra or {})
    return env


def treadle(
    home: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> Result:
    proc = subprocess.run(
        [str(EXECUTABLE), *args],
        cwd=REPO,
        env=cli_env(home, env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return Result(tuple(args), proc.returncode, proc.stdout, proc.stderr)


@contextmanager
def recorded(home: Path) -> Iterator[Store]:
    """The store the CLI wrote to, opened the way the CLI opens it."""
    store = open_store(load_settings({"TREADLE_HOME": str(home), "TREADLE_USER": USER}))
    try:
        yield store
    finally:
        store.close()


def project_id(store: Store) -> str:
    return store.projects.ensure_project(store.settings.project, USER).id


def all_runs(home: Path) -> list[RunRecord]:
    with recorded(home) as store:
        return store.runs.list_runs(project_id(store), limit=10_000)


def get_run(home: Path, run_id: str) -> RunRecord:
    with recorded(home) as store:
        return store.runs.get_run(run_id)


def steps_of(home: Path, run_id: str) -> list[StepRunRecord]:
    with recorded(home) as store:
        return store.runs.list_steps(run_id)


def states_by_node(steps: list[StepRunRecord]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s in steps:
        out.setdefault(s.node, []).append(s.state.value)
    return out


def squash(text: str) -> str:
    """Whitespace folded to single spaces, for messages a console may have wrapped."""
    return " ".join(text.split())


def assert_clean_error(result: Result, *fragments: str) -> None:
    """A refused command: non-zero exit, `error: ...` then a hint on stderr, no traceback."""
    assert result.returncode != 0, str(result)
    assert "Traceback" not in result.output, str(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, f"expected an error line and a hint:\n{result}"
    assert lines[0].startswith("error: "), str(result)
    assert lines[1].startswith("  ") and lines[1].strip(), f"no hint:\n{result}"
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} not in stderr:\n{result}"
