"""Pipeline CI and CD through the real `treadle` executable: build a package, test the
steps, deploy to staging, run there, promote the same package to prod, roll back, and
write a CI workflow that does all of it. Then, on prod, a seconds-level schedule and a
webhook trigger made with `treadle schedules` / `treadle triggers` start runs of the
package that register models through its gate, and `treadle runs why` says what started
each run.

Two `treadle up` servers on 127.0.0.1 (staging and prod, each with a home of its own)
are shared by the module; the CLI knows them only through TREADLE_ENV_STAGING_* and
TREADLE_ENV_PROD_*, as a CI job does. The issue's story (staging, then prod, then a
forced deploy) is played once by the `story` fixture; the tests read what it recorded
and what the servers hold.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from cli_support import EXECUTABLE, QUICKSTART, REPO, Result, cli_env, squash

import treadle
from treadle.errors import ConflictError, InvalidInputError, NotFoundError
from treadle.store.records import (
    Fire,
    PipelineVersionRecord,
    RunRecord,
    ScheduleFireRecord,
)
from treadle.types import RunState

pytestmark = pytest.mark.slow

TOKEN = re.compile(r"trd_[A-Za-z0-9_\-]{20,}")
READY_SECONDS = 60.0
PACKAGE = re.compile(r"wrote (\S*training-([0-9a-f]{12})\.treadle)$", re.MULTILINE)

FAILING_SMOKE = """
from treadle import pipeline, step


@step
def per_row(n: int) -> float:
    return 100 / n


@pipeline(smoke={"n": 0})
def fragile(n: int = 10) -> None:
    per_row(n)
"""

PASSING_TESTS = """
from pipeline import evaluate, load, split


def test_load_gives_the_rows_asked_for():
    assert len(load.fn(rows=60)) == 60


def test_split_keeps_both_classes_on_each_side():
    train_set, test_set = split.fn(load.fn(rows=200))
    assert len(train_set) + len(test_set) == 200
    assert set(train_set["target"]) == set(test_set["target"]) == {0, 1}
"""

FAILING_TESTS = """
from pipeline import load


def test_load_gives_one_row_too_many():
    assert len(load.fn(rows=60)) == 61
"""


# -- processes --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _no_proxy(env: Mapping[str, str]) -> dict[str, str]:
    # the servers are on 127.0.0.1: a proxy from the environment must never see a request
    return {k: v for k, v in env.items() if "proxy" not in k.lower()}


@dataclasses.dataclass
class Server:
    name: str
    home: Path
    proc: subprocess.Popen[bytes]
    port: int
    stderr_path: Path
    token: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def client(self) -> treadle.Client:
        return treadle.Client(self.url, self.token, project="default", trust_env=False)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)


def _launch(name: str, root: Path) -> Server:
    home, logs = root / name, root / "logs"
    home.mkdir(parents=True)
    logs.mkdir(exist_ok=True)
    port = _free_port()
    stderr_path = logs / f"{name}-{port}-{uuid.uuid4().hex[:6]}.err"
    with stderr_path.open("wb") as err:
        proc = subprocess.Popen(
            [str(EXECUTABLE), "up", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO,
            env=_no_proxy(cli_env(home, {"TREADLE_USER": f"{name}-admin"})),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    return Server(name, home, proc, port, stderr_path)


def _ready(server: Server) -> bool:
    """Waits for /healthz; False if the process ended first (a port taken meanwhile)."""
    deadline = time.monotonic() + READY_SECONDS
    with httpx.Client(base_url=server.url, timeout=2.0, trust_env=False) as http:
        while time.monotonic() < deadline and server.proc.poll() is None:
            with suppress(httpx.TransportError):
                if http.get("/healthz").status_code == 200:
                    tokens = set(TOKEN.findall(server.stderr()))
                    assert len(tokens) == 1, f"expected one admin token:\n{server.stderr()}"
                    server.token = tokens.pop()
                    return True
            time.sleep(0.05)
    server.stop()
    if "address already in use" not in server.stderr().lower():
        raise AssertionError(f"treadle up ({server.name}) was not ready:\n{server.stderr()}")
    return False


@dataclasses.dataclass
class Envs:
    staging: Server
    prod: Server
    root: Path

    def env(self, **extra: str) -> dict[str, str]:
        """What a CI job has: the two environments' URLs and tokens."""
        return {
            "TREADLE_ENV_STAGING_URL": self.staging.url,
            "TREADLE_ENV_STAGING_TOKEN": self.staging.token,
            "TREADLE_ENV_PROD_URL": self.prod.url,
            "TREADLE_ENV_PROD_TOKEN": self.prod.token,
            **extra,
        }

    def cli(
        self, cwd: Path, *args: str, timeout: float = 120, extra: Mapping[str, str] | None = None
    ) -> Result:
        """`treadle ARGS` in `cwd`, with a home and a temporary folder of its own (and
        `extra` environment variables, such as TREADLE_URL)."""
        scratch = self.root / "cli-tmp"
        scratch.mkdir(exist_ok=True)
        env = cli_env(self.root / "cli-home", self.env(TMPDIR=str(scratch), **(extra or {})))
        proc = subprocess.run(
            [str(EXECUTABLE), *args],
            cwd=cwd,
            env=_no_proxy(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return Result(tuple(args), proc.returncode, proc.stdout, proc.stderr)

    def ok(self, cwd: Path, *args: str) -> Result:
        result = self.cli(cwd, *args)
        assert result.returncode == 0, str(result)
        assert "Traceback" not in result.output, str(result)
        return result


@pytest.fixture(scope="module")
def envs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Envs]:
    root = tmp_path_factory.mktemp("cicd")
    launched: list[Server] = []
    ready: dict[str, Server] = {}
    try:
        for attempt in range(3):
            # both start at once; only one that lost its port to someone else is retried
            pending = [
                _launch(name, root / f"attempt-{attempt}")
                for name in ("staging", "prod")
                if name not in ready
            ]
            launched += pending
            ready.update({s.name: s for s in pending if _ready(s)})
            if len(ready) == 2:
                break
        assert len(ready) == 2, "could not start both servers"
        yield Envs(ready["staging"], ready["prod"], root)
    finally:
        for server in launched:
            server.stop()


# -- helpers ----------------------------------------------------------------------------


def quickstart_copy(folder: Path) -> Path:
    """The quickstart in a folder of its own: what a project's repository holds."""
    folder.mkdir(parents=True)
    return Path(shutil.copy(REPO / QUICKSTART, folder / "pipeline.py"))


def built(result: Result) -> tuple[Path, str]:
    """(the package written, its version) from `treadle pipeline build`'s output."""
    found = PACKAGE.findall(result.stdout)
    assert len(found) == 1, f"expected one `wrote` line:\n{result}"
    return Path(found[0][0]), found[0][1]


def build(envs: Envs, source: Path) -> tuple[Path, str]:
    """`treadle pipeline build --no-smoke` in the source's folder."""
    result = envs.ok(source.parent, "pipeline", "build", source.name, "--no-smoke")
    path, version = built(result)
    return source.parent / path, version


def versions_of(client: treadle.Client, name: str = "training") -> list[PipelineVersionRecord]:
    try:
        return client.list_pipeline_versions(name)
    except NotFoundError:
        return []


def current_of(client: treadle.Client, name: str = "training") -> str | None:
    found = [p for p in client.list_pipelines() if p.name == name]
    return found[0].current_version_id if found else None


def run_on(envs: Envs, cwd: Path, env: str, rows: int) -> tuple[Result, RunRecord]:
    """`treadle pipeline run training --env ENV`, and the run as the server recorded it."""
    result = envs.cli(cwd, "pipeline", "run", "training", "--env", env, "-p", f"rows={rows}")
    server = envs.staging if env == "staging" else envs.prod
    return result, server.client().get_run(result.run_id)


def refused(result: Result, *fragments: str) -> str:
    """A refusal: exit 1, an `error:` line, no traceback; the folded stderr."""
    assert result.returncode == 1, str(result)
    assert "Traceback" not in result.output, str(result)
    assert result.stderr.startswith("error: "), str(result)
    said = squash(result.stderr)
    for fragment in fragments:
        assert fragment in said, f"{fragment!r} not in stderr:\n{result}"
    return said


def rewritten(package: Path, target: Path, change: Any) -> Path:
    """A copy of the package with each member's bytes passed through `change(name, data)`
    and the manifest kept as it was."""
    with zipfile.ZipFile(package) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for info, data in members:
            archive.writestr(info, change(info.filename, data))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(buffer.getvalue())
    return target


# -- 1. build ---------------------------------------------------------------------------


def test_build_writes_a_versioned_package_after_a_smoke_run(envs: Envs, tmp_path: Path) -> None:
    source = quickstart_copy(tmp_path / "project")
    first = envs.ok(source.parent, "pipeline", "build", "pipeline.py")
    path, version = built(first)
    assert path == Path("dist") / f"training-{version}.treadle", str(first)
    assert (source.parent / path).is_file()
    # the smoke run, with the rows the pipeline declares, in a home of its own
    assert f"pipeline training version {version}" in first.stdout
    for step_name in ("load", "split", "train", "evaluate", "register"):
        assert re.search(rf"✓ {step_name} done", first.stdout), str(first)
    assert "smoke run SUCCEEDED" in first.stdout
    assert not (envs.root / "cli-home" / "treadle.db").exists(), "the smoke run used the home"
    with zipfile.ZipFile(source.parent / path) as archive:
        assert set(archive.namelist()) == {"treadle.json", "src/pipeline.py"}

    # the same source builds the same version; an edit builds another
    _, again = build(envs, source)
    assert again == version
    assert sorted(p.name for p in (source.parent / "dist").iterdir()) == [path.name]
    source.write_text(source.read_text().replace("max_iter=2000", "max_iter=3000"))
    _, edited = build(envs, source)
    assert edited != version
    assert {p.name for p in (source.parent / "dist").iterdir()} == {
        f"training-{version}.treadle",
        f"training-{edited}.treadle",
    }


def test_build_refuses_a_pipeline_whose_smoke_run_fails(envs: Envs, tmp_path: Path) -> None:
    folder = tmp_path / "fragile"
    folder.mkdir()
    (folder / "flow.py").write_text(FAILING_SMOKE)
    result = envs.cli(folder, "pipeline", "build", "flow.py")
    assert result.returncode == 1, str(result)
    assert "Traceback" not in result.output, str(result)
    assert "smoke run FAILED" in result.stdout, str(result)
    assert "ZeroDivisionError" in result.stdout, str(result)
    assert "TREADLE_HOME=" in result.stdout, "the failed smoke run's home is not named"
    assert not (folder / "dist").exists(), "a package was written for a failed smoke run"


# -- 2. test ----------------------------------------------------------------------------


def test_pipeline_test_runs_the_step_tests_then_the_smoke_run(envs: Envs, tmp_path: Path) -> None:
    source = quickstart_copy(tmp_path / "project")
    (source.parent / "test_steps.py").write_text(PASSING_TESTS)
    result = envs.ok(source.parent, "pipeline", "test", "pipeline.py")
    report = squash(result.stdout)
    assert "step tests passed 2 passed" in report, str(result)
    assert "smoke run passed smoke run SUCCEEDED" in report, str(result)
    assert "FAILED" not in result.stdout


def test_pipeline_test_exits_1_naming_the_failing_test(envs: Envs, tmp_path: Path) -> None:
    source = quickstart_copy(tmp_path / "project")
    (source.parent / "test_steps.py").write_text(FAILING_TESTS)
    result = envs.cli(source.parent, "pipeline", "test", "pipeline.py", "--no-smoke")
    assert result.returncode == 1, str(result)
    assert "Traceback (most recent call last)" not in result.stderr, str(result)
    assert "test_load_gives_one_row_too_many" in result.stdout, str(result)
    assert "step tests FAILED 1 failed" in squash(result.stdout), str(result)


def test_a_step_that_logs_can_be_called_as_a_plain_function_inside_start_run(
    tmp_path: Path,
) -> None:
    from treadle import start_run
    from treadle.config import load_settings

    spec = importlib.util.spec_from_file_location("cicd_quickstart", REPO / QUICKSTART)
    assert spec is not None and spec.loader is not None
    quickstart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quickstart)
    train_set, test_set = quickstart.split.fn(quickstart.load.fn(rows=200))
    # as `treadle pipeline test --help` says: a step that logs runs inside start_run
    with start_run(settings=load_settings({"TREADLE_HOME": str(tmp_path / "home")})) as run:
        model = quickstart.train.fn(train_set)
        assert quickstart.evaluate.fn(model, test_set)["accuracy"] > 0.8
    assert run.refresh().params["model"] == "logistic-regression"


# -- 3, 4. the story: staging, then prod ----------------------------------------


@dataclasses.dataclass(frozen=True)
class Story:
    work: Path
    first: Path
    """The package deployed to staging, run there, then promoted to prod."""
    first_version: str
    second: Path
    """A later package, never deployed to staging, forced to prod."""
    second_version: str
    before_staging_run: Result
    staging_run: tuple[Result, RunRecord]
    promoted: Result
    prod_run: tuple[Result, RunRecord]
    broken_copy_run: tuple[Result, RunRecord]
    broken_copy: str
    """The working copy while that run ran: its first step raises."""
    unforced: Result
    forced: Result
    prod_pipelines_when_refused: list[str]
    prod_versions: list[PipelineVersionRecord]
    staging_versions: list[PipelineVersionRecord]


@pytest.fixture(scope="module")
def story(envs: Envs, tmp_path_factory: pytest.TempPathFactory) -> Story:
    work = tmp_path_factory.mktemp("story")
    source = quickstart_copy(work / "project")
    cwd = source.parent
    first, first_version = build(envs, source)

    envs.ok(cwd, "pipeline", "deploy", str(first), "--to", "staging")
    before = envs.cli(cwd, "pipeline", "deploy", str(first), "--to", "prod")
    on_prod_then = [p.name for p in envs.prod.client().list_pipelines()]
    staging_run = run_on(envs, cwd, "staging", 120)
    promoted = envs.ok(cwd, "pipeline", "deploy", str(first), "--to", "prod")
    prod_run = run_on(envs, cwd, "prod", 121)

    # the working copy breaks; what runs on prod is the package's code
    original = source.read_text()
    source.write_text(
        original.replace(
            "    frame = load_breast_cancer",
            '    raise RuntimeError("the working copy is broken")\n    frame = load_breast_cancer',
        )
    )
    broken_copy = source.read_text()
    broken_copy_run = run_on(envs, cwd, "prod", 122)

    # a new version that never saw staging
    source.write_text(original.replace('"logistic-regression"', '"logistic-regression-v2"'))
    second, second_version = build(envs, source)
    unforced = envs.cli(cwd, "pipeline", "deploy", str(second), "--to", "prod")
    forced = envs.cli(cwd, "pipeline", "deploy", str(second), "--to", "prod", "--force")
    return Story(
        work=cwd,
        first=first,
        first_version=first_version,
        second=second,
        second_version=second_version,
        before_staging_run=before,
        staging_run=staging_run,
        promoted=promoted,
        prod_run=prod_run,
        broken_copy_run=broken_copy_run,
        broken_copy=broken_copy,
        unforced=unforced,
        forced=forced,
        prod_pipelines_when_refused=on_prod_then,
        prod_versions=versions_of(envs.prod.client()),
        staging_versions=versions_of(envs.staging.client()),
    )


def test_a_package_deployed_to_staging_runs_there(envs: Envs, story: Story) -> None:
    result, run = story.staging_run
    assert result.returncode == 0, str(result)
    assert result.final_state == "SUCCEEDED"
    assert run.state is RunState.SUCCEEDED
    [version] = story.staging_versions
    assert version.hash[:12] == story.first_version
    assert version.source.startswith("package:")
    assert run.pipeline_version_id == version.id


def test_prod_refuses_a_package_before_it_ran_green_in_staging(story: Story) -> None:
    refused(
        story.before_staging_run,
        f"training {story.first_version} has no successful run in staging; prod requires one",
        "--force",
    )
    assert story.prod_pipelines_when_refused == []


def test_after_a_green_staging_run_prod_takes_the_package_and_runs_it(
    envs: Envs, story: Story
) -> None:
    assert f"training {story.first_version} → prod" in story.promoted.stdout
    assert "registered" in story.promoted.stdout
    assert "warning" not in story.promoted.stderr
    result, run = story.prod_run
    assert result.returncode == 0, str(result)
    assert run.state is RunState.SUCCEEDED
    first_on_prod = story.prod_versions[0]
    assert first_on_prod.hash == story.staging_versions[0].hash
    assert run.pipeline_version_id == first_on_prod.id
    # the run's model is registered on prod, and only there
    prod = envs.prod.client()
    produced = {v.run_id for v in prod.list_versions("breast-cancer")}
    assert run.id in produced
    staging_models = {v.run_id for v in envs.staging.client().list_versions("breast-cancer")}
    assert run.id not in staging_models
    assert story.staging_run[1].id in staging_models


def test_a_run_executes_the_packages_code_not_the_working_copy(story: Story) -> None:
    assert "the working copy is broken" in story.broken_copy
    result, run = story.broken_copy_run
    assert result.returncode == 0, str(result)
    assert run.state is RunState.SUCCEEDED, run.error
    assert "(5 ran, 0 cached)" in result.stdout, "the run did not execute the steps"
    assert "working copy is broken" not in result.output


def test_force_deploys_a_never_staged_version_and_the_audit_log_says_so(
    envs: Envs, story: Story
) -> None:
    refused(story.unforced, f"training {story.second_version} has no successful run in staging")
    assert story.forced.returncode == 0, str(story.forced)
    assert f"training {story.second_version} → prod" in story.forced.stdout
    assert "deployed with --force" in story.forced.stderr
    assert [v.hash[:12] for v in story.prod_versions] == [
        story.first_version,
        story.second_version,
    ]
    assert [v.hash[:12] for v in story.staging_versions] == [story.first_version]

    entries = envs.prod.client().audit(limit=500)
    deploys = [e for e in entries if e.action == "deploy-pipeline"]
    by_version = {e.detail["version"]: e for e in deploys}
    assert set(by_version) == {story.first_version, story.second_version}
    assert "forced" not in by_version[story.first_version].detail
    forced = by_version[story.second_version]
    assert "no successful run in staging" in forced.detail["forced"]
    assert forced.target_id == story.prod_versions[1].id
    # the same log, as the HTTP API gives it
    with httpx.Client(base_url=envs.prod.url, trust_env=False) as http:
        answer = http.get(
            "/api/v1/projects/default/audit",
            headers={"Authorization": f"Bearer {envs.prod.token}"},
        )
    assert answer.status_code == 200, answer.text
    assert any(e["action"] == "deploy-pipeline" and "forced" in e["detail"] for e in answer.json())


# -- 5. versions and rollback -----------------------------------------------------------


def marked(listing: Result) -> list[str]:
    """The versions `treadle pipeline versions` marks as current."""
    return re.findall(r"●\s+([0-9a-f]{12})\b", listing.stdout)


def test_rollback_makes_the_previous_version_current_and_runs_it(envs: Envs, story: Story) -> None:
    cwd, prod = story.work, envs.prod.client()
    first, second = story.prod_versions
    listing = envs.ok(cwd, "pipeline", "versions", "training", "--env", "prod")
    assert marked(listing) == [story.second_version], str(listing)
    assert story.first_version in listing.stdout
    assert current_of(prod) == second.id

    back = envs.ok(cwd, "pipeline", "rollback", "training", "--env", "prod")
    assert f"{story.second_version} → {story.first_version}" in back.stdout
    assert current_of(prod) == first.id
    listing = envs.ok(cwd, "pipeline", "versions", "training", "--env", "prod")
    assert marked(listing) == [story.first_version], str(listing)

    result, run = run_on(envs, cwd, "prod", 123)
    assert result.returncode == 0, str(result)
    assert run.pipeline_version_id == first.id

    # nothing before the first version
    refused(
        envs.cli(cwd, "pipeline", "rollback", "training", "--env", "prod"),
        "is its first version",
    )
    assert current_of(prod) == first.id

    # roll forward again by naming the version
    envs.ok(
        cwd, "pipeline", "rollback", "training", "--env", "prod", "--to-version", second.hash[:12]
    )
    assert current_of(prod) == second.id


# -- 6. bad input -----------------------------------------------------------------------


def test_a_tampered_package_is_refused_and_nothing_is_registered(
    envs: Envs, story: Story, tmp_path: Path
) -> None:
    def one_byte(name: str, data: bytes) -> bytes:
        return (
            data.replace(b"random_state=0", b"random_state=1", 1) if name.endswith(".py") else data
        )

    tampered = rewritten(story.first, tmp_path / "dist" / story.first.name, one_byte)
    before = [v.id for v in versions_of(envs.staging.client())]
    result = envs.cli(story.work, "pipeline", "deploy", str(tampered), "--to", "staging")
    refused(result, "the package's files do not match its manifest", "'pipeline.py' differs")
    assert [v.id for v in versions_of(envs.staging.client())] == before

    # the server checks too, for a caller that is not the CLI
    with pytest.raises(InvalidInputError, match="do not match its manifest"):
        envs.staging.client().deploy_package(tampered.read_bytes())
    assert [v.id for v in versions_of(envs.staging.client())] == before


def test_a_package_for_another_pipeline_is_refused(
    envs: Envs, story: Story, tmp_path: Path
) -> None:
    before = [v.id for v in versions_of(envs.staging.client())]
    result = envs.cli(
        story.work, "pipeline", "deploy", str(story.first), "--to", "staging", "--pipeline", "other"
    )
    refused(result, "was built for pipeline 'training', not 'other'")
    with pytest.raises(InvalidInputError, match="not 'other'"):
        envs.staging.client().deploy_package(story.first.read_bytes(), pipeline="other")

    # renamed to the file name another pipeline's package would have
    renamed = tmp_path / "scoring-0123456789ab.treadle"
    shutil.copy(story.first, renamed)
    result = envs.cli(story.work, "pipeline", "deploy", str(renamed), "--to", "staging")
    refused(result, f"holds training-{story.first_version}.treadle", "renamed")
    assert [v.id for v in versions_of(envs.staging.client())] == before
    assert [p.name for p in envs.staging.client().list_pipelines()] == ["training"]


def test_an_unknown_environment_is_refused_naming_how_to_configure_it(
    envs: Envs, story: Story
) -> None:
    result = envs.cli(story.work, "pipeline", "deploy", str(story.first), "--to", "qa")
    refused(
        result,
        "no environment named 'qa' (configured: prod, staging)",
        "TREADLE_ENV_QA_URL",
        "TREADLE_ENV_QA_TOKEN",
        "config.toml",
    )


def test_the_unknown_environment_hint_shows_the_config_table_to_add(
    envs: Envs, story: Story
) -> None:
    result = envs.cli(story.work, "pipeline", "deploy", str(story.first), "--to", "qa")
    refused(result, "add [environments.qa] with url and token_env to")


# -- 7. init --ci -----------------------------------------------------------------------


def commands_of(ci: str, workflow: dict[str, Any]) -> list[str]:
    if ci == "github":
        return [
            step["run"]
            for job in workflow["jobs"].values()
            for step in job["steps"]
            if "run" in step
        ]
    return [
        line for job in workflow.values() if isinstance(job, dict) for line in job.get("script", [])
    ]


@pytest.mark.parametrize(
    ("ci", "written"),
    [("github", ".github/workflows/treadle-pipeline.yml"), ("gitlab", ".gitlab-ci.yml")],
)
def test_init_writes_a_ci_workflow_that_tests_builds_and_deploys(
    envs: Envs, tmp_path: Path, ci: str, written: str
) -> None:
    source = quickstart_copy(tmp_path / "repo")
    result = envs.ok(source.parent, "init", "--ci", ci)
    path = source.parent / written
    assert path.is_file(), str(result)
    workflow = yaml.safe_load(path.read_text())
    commands = commands_of(ci, workflow)
    for expected in (
        'treadle pipeline test "$PIPELINE"',
        'treadle pipeline build "$PIPELINE" --out dist',
        "treadle pipeline deploy dist/*.treadle --to staging",
        "treadle pipeline run training --env staging",
        "treadle pipeline deploy dist/*.treadle --to prod",
    ):
        assert expected in commands, f"{expected!r} not in {commands}"
    pipeline_var = workflow["env" if ci == "github" else "variables"]["PIPELINE"]
    assert pipeline_var == "pipeline.py"
    # what the deploy steps need to find the environments
    if ci == "github":
        prod_env = workflow["jobs"]["prod"]["env"]
        assert set(prod_env) == {
            "TREADLE_ENV_STAGING_URL",
            "TREADLE_ENV_STAGING_TOKEN",
            "TREADLE_ENV_PROD_URL",
            "TREADLE_ENV_PROD_TOKEN",
        }
        assert prod_env["TREADLE_ENV_PROD_TOKEN"] == "${{ secrets.TREADLE_PROD_TOKEN }}"
        assert workflow["jobs"]["prod"]["needs"] == "staging"
    else:
        assert workflow["stages"] == ["test", "build", "staging", "prod"]
        assert "TREADLE_ENV_PROD_TOKEN" in path.read_text()

    # a second init does not overwrite it; --force does
    path.write_text(path.read_text() + "# edited by hand\n")
    again = envs.cli(source.parent, "init", "--ci", ci)
    refused(again, f"{written} exists", "--force")
    assert path.read_text().endswith("# edited by hand\n")
    envs.ok(source.parent, "init", "--ci", ci, "--force")
    assert "# edited by hand" not in path.read_text()


# -- 8. automated runs on prod ------------------------------------------------------------

SCHEDULE = "every-3s"
SCHEDULE_CRON = "* * * * * */3"
HOOK = "hook"
MODEL = "breast-cancer"
CHALLENGER = re.compile(r"^version (\d+) is the challenger \(accuracy >= 0\.9\)$")
# accuracy can be exactly 1.0 on a small test set: a gate no model can pass
NO_MODEL_PASSES = "accuracy > 1"


@dataclasses.dataclass(frozen=True)
class Automated:
    """What the CLI printed and prod recorded while a schedule and a webhook trigger,
    made with `treadle schedules` / `treadle triggers` on prod, started runs there."""

    schedule_created: Result
    first_fire: ScheduleFireRecord
    paused: Result
    schedule_listing: Result
    fires_listing: Result
    fires_when_paused: set[str]
    fires_later: set[str]
    seconds_paused: float
    trigger_created: Result
    hook_url: str
    secret: str
    delivered: Fire
    replayed: Exception | None
    """What sending that delivery a second time raised."""
    gated: Result
    runs: dict[str, RunRecord]
    """The finished run of each cause: schedule, webhook, manual (the gated run)."""
    why: dict[str, Result]


def on_prod(envs: Envs, cwd: Path, *args: str, url_flag: bool = False) -> Result:
    """`treadle ARGS` against prod: TREADLE_URL (or --url) and TREADLE_TOKEN."""
    extra = {"TREADLE_TOKEN": envs.prod.token}
    if url_flag:
        args = ("--url", envs.prod.url, *args)
    else:
        extra["TREADLE_URL"] = envs.prod.url
    result = envs.cli(cwd, *args, extra=extra)
    assert result.returncode == 0, str(result)
    assert "Traceback" not in result.output, str(result)
    return result


def _eventually(probe: Any, seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while not (found := probe()):
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.1)
    return found


def _finished(client: treadle.Client, run_id: str) -> RunRecord:
    run: RunRecord = _eventually(
        lambda: (r := client.get_run(run_id)).state.finished and r, 90, f"run {run_id} ended"
    )
    return run


@pytest.fixture(scope="module")
def automated(envs: Envs, story: Story) -> Automated:
    cwd, prod = story.work, envs.prod.client()
    schedule_created = on_prod(
        envs,
        cwd,
        "schedules",
        "create",
        SCHEDULE,
        "--pipeline",
        "training",
        "--cron",
        SCHEDULE_CRON,
        "-p",
        "rows=131",
        url_flag=True,
    )
    [first_fire, *_] = _eventually(
        lambda: sorted(
            (f for f in prod.schedule_fires(SCHEDULE) if f.outcome == "started"),
            key=lambda f: f.due_at,
        ),
        15,
        f"a fire of {SCHEDULE} on prod",
    )
    paused = on_prod(envs, cwd, "schedules", "pause", SCHEDULE)
    paused_at = time.monotonic()
    time.sleep(0.5)  # a fire claimed just before the pause may still be landing
    fires_when_paused = {f.id for f in prod.schedule_fires(SCHEDULE)}
    schedule_listing = on_prod(envs, cwd, "schedules", "list")

    trigger_created = on_prod(
        envs, cwd, "triggers", "create", HOOK, "--on", "webhook", "--pipeline", "training",
        "-p", "c=$event.c",
    )  # fmt: skip
    hook_url = re.search(r"^webhook URL: (\S+)$", trigger_created.stdout, re.MULTILINE)
    secret = re.search(r"shown this once, keep it\): (\S+)$", trigger_created.stdout, re.MULTILINE)
    assert hook_url and secret, str(trigger_created)
    hook, stamp = urlsplit(hook_url[1]).path, time.time()
    delivered = prod.deliver_webhook(hook, secret[1], {"c": 0.3}, timestamp=stamp)
    try:  # the very same delivery again (same timestamp, so the same signature)
        prod.deliver_webhook(hook, secret[1], {"c": 0.3}, timestamp=stamp)
        replayed: Exception | None = None
    except ConflictError as refused:
        replayed = refused

    gated = envs.cli(
        cwd, "pipeline", "run", "training", "--env", "prod",
        "-p", "rows=132", "-p", f"gate={NO_MODEL_PASSES}",
    )  # fmt: skip
    assert delivered.run_id is not None and first_fire.run_id is not None
    runs = {
        "schedule": _finished(prod, first_fire.run_id),
        "webhook": _finished(prod, delivered.run_id),
        "manual": _finished(prod, gated.run_id),
    }
    why = {cause: on_prod(envs, cwd, "runs", "why", run.id) for cause, run in runs.items()}
    fires_listing = on_prod(envs, cwd, "schedules", "fires", SCHEDULE)
    # a full period (and then some) after the pause: nothing more fired
    time.sleep(max(0.0, 3.5 - (time.monotonic() - paused_at)))
    return Automated(
        schedule_created=schedule_created,
        first_fire=first_fire,
        paused=paused,
        schedule_listing=schedule_listing,
        fires_listing=fires_listing,
        fires_when_paused=fires_when_paused,
        fires_later={f.id for f in prod.schedule_fires(SCHEDULE)},
        seconds_paused=time.monotonic() - paused_at,
        trigger_created=trigger_created,
        hook_url=hook_url[1],
        secret=secret[1],
        delivered=delivered,
        replayed=replayed,
        gated=gated,
        runs=runs,
        why=why,
    )


def test_a_schedule_made_with_the_cli_fires_on_prod_until_paused(
    envs: Envs, automated: Automated
) -> None:
    said = squash(automated.schedule_created.stdout)
    assert f"schedule {SCHEDULE}: training at '{SCHEDULE_CRON}' (UTC); next due" in said
    fire = automated.first_fire
    assert fire.due_at == int(fire.due_at) and int(fire.due_at) % 3 == 0, fire
    run = automated.runs["schedule"]
    assert run.state is RunState.SUCCEEDED, run.error
    assert run.cause is not None and run.cause["kind"] == "schedule"
    assert run.cause["schedule"] == SCHEDULE and run.cause["due_at"] == fire.due_at
    prod = envs.prod.client()
    assert prod.get_params(run.id)["rows"] == "131"
    # the run executed the version prod holds now, deployed as a package
    assert run.pipeline_version_id == current_of(prod)
    assert fire.run_id is not None and fire.run_id[:8] in automated.fires_listing.stdout
    assert "started" in automated.fires_listing.stdout

    assert f"schedule {SCHEDULE} paused" in automated.paused.stdout
    [row] = [line for line in automated.schedule_listing.stdout.splitlines() if SCHEDULE in line]
    assert "paused" in row and "training" in row, row
    assert prod.get_schedule(SCHEDULE).paused is True
    assert automated.seconds_paused >= 3.5
    assert automated.fires_later == automated.fires_when_paused, "it fired while paused"


def test_a_webhook_trigger_made_with_the_cli_starts_a_run_on_a_signed_delivery(
    envs: Envs, automated: Automated
) -> None:
    out = automated.trigger_created.stdout
    assert f"trigger {HOOK}: on webhook run training" in out
    trigger = envs.prod.client().get_trigger(HOOK)
    assert automated.hook_url == f"{envs.prod.url}/api/v1/hooks/{trigger.id}"
    assert automated.secret.startswith("whsec_")
    assert "X-Treadle-Signature" in out  # how to sign is said where the secret is shown
    assert trigger.params == {"c": "$event.c"} and trigger.has_secret

    assert automated.delivered.outcome == "started"
    run = automated.runs["webhook"]
    assert run.id == automated.delivered.run_id
    assert run.state is RunState.SUCCEEDED, run.error
    assert envs.prod.client().get_params(run.id)["c"] == "0.3"
    assert run.cause is not None
    assert (run.cause["kind"], run.cause["trigger"]) == ("webhook", HOOK)
    assert run.cause["event"] == {"c": 0.3}
    assert isinstance(automated.replayed, ConflictError), "a replayed delivery was taken"
    assert "received before" in automated.replayed.message
    assert [f.run_id for f in envs.prod.client().trigger_fires(HOOK)] == [run.id]


def test_automated_and_manual_runs_register_models_through_the_gate(
    envs: Envs, automated: Automated
) -> None:
    prod = envs.prod.client()
    by_run = {v.run_id: v for v in prod.list_versions(MODEL)}
    became = []
    for cause in ("schedule", "webhook"):
        run = automated.runs[cause]
        assert run.id in by_run, f"the {cause} run registered no version of {MODEL}"
        promotion = prod.get_params(run.id)["promotion"]
        found = CHALLENGER.match(promotion)
        assert found, f"{cause}: {promotion}"
        assert int(found[1]) == by_run[run.id].version
        became.append(by_run[run.id].version)

    gated = automated.gated
    assert gated.returncode == 0 and gated.final_state == "SUCCEEDED", str(gated)
    assert "promotion: not promoted:" in gated.stdout, str(gated)
    run = automated.runs["manual"]
    promotion = prod.get_params(run.id)["promotion"]
    assert promotion.startswith("not promoted:") and NO_MODEL_PASSES in promotion, promotion
    assert run.id in by_run, "the gated run's model was not registered"
    history = prod.alias_history(MODEL, "challenger")
    moved_to = {e.to_version for e in history}
    assert set(became) <= moved_to
    assert by_run[run.id].version not in moved_to
    assert prod.get_alias(MODEL, "challenger").version != by_run[run.id].version


def test_runs_why_on_prod_says_schedule_trigger_or_manual(envs: Envs, automated: Automated) -> None:
    said = {cause: squash(result.stdout) for cause, result in automated.why.items()}
    runs = automated.runs
    assert f"run {runs['schedule'].id} " in said["schedule"]
    assert f"schedule '{SCHEDULE}' ({SCHEDULE_CRON} UTC) was due at" in said["schedule"]
    assert "kind schedule" in said["schedule"]

    assert f"run {runs['webhook'].id} " in said["webhook"]
    assert f"""trigger '{HOOK}' acted on a webhook event: {{"c": 0.3}}""" in said["webhook"]
    assert f"trigger {HOOK}" in said["webhook"] and "kind webhook" in said["webhook"]

    assert f"run {runs['manual'].id} " in said["manual"]
    assert "started it" in said["manual"] and "kind manual" in said["manual"]
    for cause, text in said.items():
        others = {"schedule", "webhook", "manual"} - {cause}
        assert not any(f"kind {other}" in text for other in others), text
