"""`treadle run FILE` against a real `treadle up`: the pipeline's folder goes up as a
package, the run executes on the server, and the terminal follows it as it follows a
local run. Packages are checked on arrival, each edit is a new version, and an old
version keeps running the code it was sent with.

One seeded server per backend for the module (api_support's platform: project `alpha`
with a viewer, an editor and an owner, and `beta-owner` outside it). The CLI runs as a
real process with a home of its own, which must stay empty.
"""

from __future__ import annotations

import dataclasses
import io
import re
import signal
import sqlite3
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_support import (
    API,
    BACKENDS,
    BETA_OWNER,
    EDITOR,
    REPO,
    TREADLE,
    VIEWER,
    Platform,
    env,
    error_of,
    started_platform,
    tiny_package,
)

import treadle
from treadle.errors import NotFoundError
from treadle.store.records import PipelineVersionRecord, RunRecord
from treadle.types import RunState, StepState

pytestmark = pytest.mark.slow

PROJECT = "alpha"
SUMMARY = re.compile(r"^run ([0-9a-f]{32}) (\w+) in ", re.MULTILINE)
FINISHED_SECONDS = 60.0
PACKAGES = f"{API}/projects/{PROJECT}/pipelines/packages"

BASIC = """
from treadle import log_metric, pipeline, step


@step
def numbers(n: int) -> list[int]:
    return list(range(n))


@step
def total(values: list[int]) -> int:
    log_metric("total", sum(values))
    return sum(values)


@pipeline
def remote_basic(n: int = 4) -> None:
    total(numbers(n))
"""

VERSIONED = """
from treadle import log_metric, pipeline, step


@step
def answer(salt: int) -> int:
    log_metric("answer", ANSWER)
    return ANSWER


@pipeline
def remote_versions(salt: int = 0) -> None:
    answer(salt)
"""

FAILING = """
from treadle import pipeline, step


@step
def prepare(n: int) -> list[int]:
    return list(range(n))


@step
def check(values: list[int]) -> int:
    raise ValueError("broken on purpose")


@pipeline
def remote_failing(n: int = 3) -> None:
    check(prepare(n))
"""

FIXED = FAILING.replace('raise ValueError("broken on purpose")', "return len(values)")

FLAKY = """
from pathlib import Path

from treadle import pipeline, step


@step
def prepare(n: int) -> list[int]:
    return [2 * i for i in range(n)]


@step
def flaky(values: list[int], marker: str) -> int:
    if Path(marker).exists():
        raise RuntimeError(f"transient trouble: {marker} is there")
    return sum(values)


@pipeline
def remote_flaky(marker: str, n: int = 3) -> None:
    flaky(prepare(n), marker)
"""

WAITING = """
import time
from pathlib import Path

from treadle import pipeline, step


@step
def prepare(n: int) -> list[int]:
    return [3 * i for i in range(n)]


@step(cache=False)
def wait_for(values: list[int], marker: str) -> int:
    deadline = time.monotonic() + 60
    while not Path(marker).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{marker} did not appear")
        time.sleep(0.05)
    return sum(values)


@pipeline
def remote_waiting(marker: str, n: int = 3) -> None:
    wait_for(prepare(n), marker)
"""

HELPED = """
from remote_run_helper import VALUE
from treadle import log_metric, pipeline, step


@step
def use_helper(salt: int) -> int:
    log_metric("value", VALUE)
    return VALUE


@pipeline
def remote_helped(salt: int = 0) -> None:
    use_helper(salt)
"""

TYPED = """
from treadle import pipeline, step


@step
def twice(n: int) -> int:
    return 2 * n


@pipeline
def remote_typed(n: int = 1) -> None:
    twice(n)
"""


@dataclasses.dataclass(frozen=True)
class Done:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (
            f"$ treadle {' '.join(self.args)}\nexit {self.returncode}\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )

    @property
    def summary(self) -> tuple[str, str]:
        """(run id, state) of the closing line."""
        found = SUMMARY.findall(self.stdout)
        assert len(found) == 1, str(self)
        return found[0]


@dataclasses.dataclass
class Caller:
    """A machine of its own talking to the platform: its own (empty) home, the
    platform's URL and a token of `alpha`."""

    platform: Platform
    home: Path

    def environ(self, role: str, *, url: bool = True) -> dict[str, str]:
        extra = {"TREADLE_TOKEN": self.platform.tokens[role], "TREADLE_PROJECT": PROJECT}
        if url:
            extra["TREADLE_URL"] = self.platform.url
        return {**env(self.home, None), **extra}

    def cli(self, *args: str, role: str = EDITOR, url_flag: bool = False) -> Done:
        """`treadle ARGS` with TREADLE_URL set, or with `--url` and no TREADLE_URL."""
        argv = [str(TREADLE), *(["--url", self.platform.url] if url_flag else []), *args]
        proc = subprocess.run(
            argv,
            cwd=REPO,
            env=self.environ(role, url=not url_flag),
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        return Done(tuple(args), proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, role: str = EDITOR, url_flag: bool = False) -> Done:
        done = self.cli(*args, role=role, url_flag=url_flag)
        assert done.returncode == 0, str(done)
        return done

    def client(self, role: str = EDITOR) -> treadle.Client:
        return treadle.Client(
            self.platform.url, self.platform.tokens[role], project=PROJECT, trust_env=False
        )

    def local_runs(self) -> int:
        """Runs in the caller's own home (its database need not even exist)."""
        db = self.home / "treadle.db"
        if not db.exists():
            return 0
        with sqlite3.connect(db) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            return (
                conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] if "runs" in tables else 0
            )


@pytest.fixture(scope="module", params=BACKENDS)
def platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    with started_platform(request, tmp_path_factory, "remote-run") as p:
        yield p


@pytest.fixture
def caller(platform: Platform, tmp_path: Path) -> Caller:
    return Caller(platform, tmp_path / "caller-home")


def write(folder: Path, text: str, name: str = "flow.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def until_finished(client: treadle.Client, run_id: str) -> RunRecord:
    deadline = time.monotonic() + FINISHED_SECONDS
    while time.monotonic() < deadline:
        run = client.get_run(run_id)
        if run.state.finished:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish within {FINISHED_SECONDS} s")


def version_of(client: treadle.Client, run_id: str) -> PipelineVersionRecord:
    run = client.get_run(run_id)
    assert run.pipeline_version_id is not None
    return client.get_pipeline_version(run.pipeline_version_id)


def versions(client: treadle.Client, pipeline: str) -> list[PipelineVersionRecord]:
    try:
        return client.list_pipeline_versions(pipeline)
    except NotFoundError:
        return []


def step_states(client: treadle.Client, run_id: str) -> dict[str, list[StepState]]:
    out: dict[str, list[StepState]] = {}
    for s in sorted(client.list_steps(run_id), key=lambda s: (s.node, s.attempt)):
        out.setdefault(s.node, []).append(s.state)
    return out


def normalized(output: str) -> list[str]:
    """The lines a run prints, without what differs between any two runs."""
    text = re.sub(r"\b[0-9a-f]{32}\b|\b[0-9a-f]{8}\b", "ID", output)
    text = re.sub(r"\b\d+(\.\d+)?(ms|s|m)\b", "T", text)
    text = re.sub(r"started: .*", "started: NAME", text)
    return [line.rstrip() for line in text.splitlines() if line.strip()]


# -- a run on the server, followed from here --------------------------------------------


def test_a_remote_run_executes_on_the_server_and_prints_what_a_local_run_prints(
    platform: Platform, caller: Caller, tmp_path: Path
) -> None:
    flow = write(tmp_path / "basic", BASIC)
    remote = caller.ok("run", str(flow), "-p", "n=5")
    run_id, state = remote.summary
    assert state == "SUCCEEDED"
    assert "(2 ran, 0 cached)" in remote.stdout
    assert "metrics: total=10" in remote.stdout

    # the same file run on a home of its own prints the same lines
    local_home = tmp_path / "local-home"
    local = subprocess.run(
        [str(TREADLE), "run", str(flow), "-p", "n=5"],
        cwd=REPO,
        env=env(local_home, None),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert local.returncode == 0, local.stdout + local.stderr
    assert normalized(remote.stdout) == normalized(local.stdout)

    # the run is the server's; the caller's own home holds none
    with caller.client() as client:
        run = client.get_run(run_id)
        assert run.state is RunState.SUCCEEDED
        assert client.get_params(run_id)["n"] == "5"
        assert step_states(client, run_id) == {
            "numbers": [StepState.SUCCEEDED],
            "total": [StepState.SUCCEEDED],
        }
        version = version_of(client, run_id)
        assert version.source.startswith("package:")
        assert version.source.endswith(":flow.py:remote_basic")
        assert [v.id for v in versions(client, "remote_basic")] == [version.id]
    assert caller.local_runs() == 0
    unpacked = platform.home / "packages" / version.hash
    assert (unpacked / "flow.py").read_text() == flow.read_text()
    assert sorted(p.name for p in unpacked.iterdir()) == ["flow.py"]

    # the same file again (through --url this time): the same version, every step cached
    again = caller.ok("run", str(flow), "-p", "n=5", url_flag=True)
    second_id, second_state = again.summary
    assert second_state == "SUCCEEDED" and second_id != run_id
    assert "(0 ran, 2 cached)" in again.stdout
    assert "every step was answered from the cache" in again.stdout
    assert f"from run {run_id[:8]}" in again.stdout
    with caller.client() as client:
        assert version_of(client, second_id).id == version.id
        assert step_states(client, second_id) == {
            "numbers": [StepState.CACHED],
            "total": [StepState.CACHED],
        }
        assert len(versions(client, "remote_basic")) == 1
    assert caller.local_runs() == 0


def test_each_edit_is_a_new_version_and_an_old_version_keeps_its_code(
    platform: Platform, caller: Caller, tmp_path: Path
) -> None:
    flow = write(tmp_path / "versioned", VERSIONED.replace("ANSWER", "1"))
    first = caller.ok("run", str(flow))
    assert "metrics: answer=1" in first.stdout
    flow.write_text(VERSIONED.replace("ANSWER", "2"))
    second = caller.ok("run", str(flow))
    assert "metrics: answer=2" in second.stdout
    assert "(1 ran, 0 cached)" in second.stdout

    with caller.client() as client:
        old, new = version_of(client, first.summary[0]), version_of(client, second.summary[0])
        assert old.id != new.id and old.hash != new.hash
        assert [v.id for v in versions(client, "remote_versions")] == [old.id, new.id]
        for version, value in ((old, 1), (new, 2)):
            code = (platform.home / "packages" / version.hash / "flow.py").read_text()
            assert f'log_metric("answer", {value})' in code

        # the old version, run again without the cache, executes the code it was sent with
        rerun = client.submit_run("remote_versions", version=old.id, use_cache=False)
        assert until_finished(client, rerun.id).state is RunState.SUCCEEDED
        assert rerun.pipeline_version_id == old.id
        assert client.latest_metrics(rerun.id) == {"answer": 1.0}
        assert step_states(client, rerun.id) == {"answer": [StepState.SUCCEEDED]}
        # and with the cache, from the old version's own result
        cached = client.submit_run("remote_versions", version=old.id)
        assert until_finished(client, cached.id).state is RunState.SUCCEEDED
        assert step_states(client, cached.id) == {"answer": [StepState.CACHED]}
        assert client.latest_metrics(cached.id) == {"answer": 1.0}


def test_a_failing_step_exits_1_and_resume_on_the_server_runs_the_code_sent(
    platform: Platform, caller: Caller, tmp_path: Path
) -> None:
    flow = write(tmp_path / "failing", FAILING)
    failed = caller.cli("run", str(flow))
    assert failed.returncode == 1, str(failed)
    run_id, state = failed.summary
    assert state == "FAILED"
    assert "broken on purpose" in failed.stdout
    assert f"`treadle runs resume {run_id[:8]}`" in failed.stdout
    assert "1 ran, 0 cached, 1 failed" in failed.stdout

    # A fix here does not reach the run: the server resumes the version it was sent,
    # so the step fails the same way again (the hint's "after a fix" means a new run).
    flow.write_text(FIXED)
    resumed = caller.cli("runs", "resume", run_id[:8])
    assert resumed.returncode == 1, str(resumed)
    assert resumed.summary == (run_id, "FAILED")
    assert "broken on purpose" in resumed.stdout
    with caller.client() as client:
        run = client.get_run(run_id)
        assert run.attempt == 2
        assert step_states(client, run_id) == {
            "check": [StepState.FAILED, StepState.FAILED],
            "prepare": [StepState.SUCCEEDED],
        }

    # the fix goes up with a new run: a new version; the unchanged step is cached
    fixed = caller.ok("run", str(flow))
    fixed_id, fixed_state = fixed.summary
    assert fixed_state == "SUCCEEDED"
    assert "(1 ran, 1 cached)" in fixed.stdout
    with caller.client() as client:
        assert version_of(client, fixed_id).id != version_of(client, run_id).id


def test_runs_resume_finishes_a_run_that_failed_for_a_transient_cause(
    caller: Caller, tmp_path: Path
) -> None:
    flow = write(tmp_path / "flaky", FLAKY)
    marker = tmp_path / "trouble"
    marker.touch()
    failed = caller.cli("run", str(flow), "-p", f"marker={marker}")
    assert failed.returncode == 1, str(failed)
    run_id, state = failed.summary
    assert state == "FAILED"
    assert "transient trouble" in failed.stdout

    marker.unlink()
    resumed = caller.ok("runs", "resume", run_id[:8])
    assert resumed.summary == (run_id, "SUCCEEDED")
    with caller.client() as client:
        assert client.get_run(run_id).attempt == 2
        assert step_states(client, run_id) == {
            "flaky": [StepState.FAILED, StepState.SUCCEEDED],
            "prepare": [StepState.SUCCEEDED],  # finished before: reused, not run again
        }
    assert caller.local_runs() == 0


def test_ctrl_c_cancels_the_run_on_the_server_and_runs_resume_finishes_it(
    caller: Caller, tmp_path: Path
) -> None:
    flow = write(tmp_path / "waiting", WAITING)
    marker = tmp_path / "go"
    out, err = tmp_path / "run.out", tmp_path / "run.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [str(TREADLE), "run", str(flow), "-p", f"marker={marker}"],
            cwd=REPO,
            env=caller.environ(EDITOR),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )
    try:
        # Ctrl-C once the command follows the run and the run waits in its second step
        deadline = time.monotonic() + FINISHED_SECONDS
        with caller.client() as client:
            while True:
                assert time.monotonic() < deadline and proc.poll() is None, out.read_text()
                started = re.search(r"^run ([0-9a-f]{8}) started", out.read_text(), re.M)
                if started and any(
                    s.node == "wait_for" and s.state is StepState.RUNNING
                    for s in client.list_steps(started.group(1))
                ):
                    break
                time.sleep(0.1)
            waiting = client.get_run(started.group(1))
            assert waiting.state is RunState.RUNNING
            assert version_of(client, waiting.id).source.startswith("package:")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(60) == 130, out.read_text() + err.read_text()
            assert f"run {waiting.id[:8]} is CANCELLED" in err.read_text()
            assert client.get_run(waiting.id).state is RunState.CANCELLED
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(15)

    marker.touch()
    resumed = caller.ok("runs", "resume", waiting.id[:8])
    assert resumed.summary == (waiting.id, "SUCCEEDED")
    with caller.client() as client:
        states = step_states(client, waiting.id)
        assert states["prepare"] == [StepState.SUCCEEDED]
        assert states["wait_for"][-1] is StepState.SUCCEEDED


def test_a_new_version_runs_its_own_helper_module(caller: Caller, tmp_path: Path) -> None:
    folder = tmp_path / "helped"
    flow = write(folder, HELPED)
    write(folder, "VALUE = 1\n", "remote_run_helper.py")
    first = caller.ok("run", str(flow))
    assert "metrics: value=1" in first.stdout
    write(folder, "VALUE = 2\n", "remote_run_helper.py")
    # without the cache: the step's own code did not change, only the module it imports
    second = caller.ok("run", str(flow), "--no-cache")
    assert "metrics: value=2" in second.stdout, second.stdout
    with caller.client() as client:
        old, new = version_of(client, first.summary[0]), version_of(client, second.summary[0])
        assert old.id != new.id
        # the old version, loaded before the new one, keeps its own helper
        rerun = client.submit_run("remote_helped", version=old.id, use_cache=False)
        assert until_finished(client, rerun.id).state is RunState.SUCCEEDED
        assert client.latest_metrics(rerun.id) == {"value": 1.0}


# -- what the server refuses ------------------------------------------------------------


def recorded_versions(platform: Platform) -> int:
    return platform.counts()["pipeline_versions"]


def tampered(data: bytes) -> bytes:
    """The package with its source changed after the build, manifest left as it was."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename == "src/tiny_flow.py":
                body = body.replace(b"2 * x", b"__import__('os').getpid()")
            dst.writestr(info, body)
    return out.getvalue()


def test_package_uploads_are_checked_before_anything_is_recorded(platform: Platform) -> None:
    good = tiny_package()
    before = recorded_versions(platform)
    tiny_known = platform.rows("SELECT id FROM pipelines WHERE name = :n", n="tiny_flow")
    zip_type = {"content-type": "application/zip"}

    bad = platform.call(EDITOR, "POST", PACKAGES, content=tampered(good), headers=zip_type)
    assert bad.status_code == 422, bad.text
    assert "do not match its manifest" in error_of(bad)
    assert "tiny_flow.py" in error_of(bad)

    junk = platform.call(EDITOR, "POST", PACKAGES, content=b"PK\x03\x04junk", headers=zip_type)
    assert junk.status_code == 422, junk.text
    assert "not a zip archive" in error_of(junk)

    plain = platform.call(
        EDITOR, "POST", PACKAGES, content=good, headers={"content-type": "text/plain"}
    )
    assert plain.status_code == 415, plain.text
    assert "application/zip" in error_of(plain)

    viewer = platform.call(VIEWER, "POST", PACKAGES, content=good, headers=zip_type)
    assert viewer.status_code == 403, viewer.text
    outsider = platform.call(BETA_OWNER, "POST", PACKAGES, content=good, headers=zip_type)
    assert outsider.status_code == 404, outsider.text

    assert recorded_versions(platform) == before
    assert platform.rows("SELECT id FROM pipelines WHERE name = :n", n="tiny_flow") == tiny_known

    # the untouched package is taken, once per content
    with treadle.Client(
        platform.url, platform.tokens[EDITOR], project=PROJECT, trust_env=False
    ) as client:
        first = client.deploy_package(good)
        again = client.deploy_package(good)
    assert first.created is not bool(tiny_known) and not again.created
    assert first.version.id == again.version.id
    assert first.version.source.startswith("package:")
    assert recorded_versions(platform) == before + first.created


def test_a_package_with_damaged_member_bytes_is_refused_not_a_500(platform: Platform) -> None:
    data = tiny_package()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo("src/tiny_flow.py")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    broken = bytearray(data)
    broken[start + info.compress_size // 2] ^= 0x01
    answer = platform.call(
        EDITOR,
        "POST",
        PACKAGES,
        content=bytes(broken),
        headers={"content-type": "application/zip"},
    )
    assert 400 <= answer.status_code < 500, answer.text


def test_a_version_of_another_pipeline_is_not_found(caller: Caller) -> None:
    with caller.client() as client:
        tiny = client.deploy_package(tiny_package()).version
        before = len(client.list_runs(limit=1000))
        with pytest.raises(NotFoundError, match="has no version"):
            client.submit_run("seed_flow", version=tiny.id)
        with pytest.raises(NotFoundError):
            client.submit_run("tiny_flow", version="0" * 32)
        assert len(client.list_runs(limit=1000)) == before
        run = client.submit_run("tiny_flow", {"x": 4}, version=tiny.id)
        assert until_finished(client, run.id).state is RunState.SUCCEEDED


def test_a_bad_parameter_is_refused_before_anything_is_uploaded(
    platform: Platform, caller: Caller, tmp_path: Path
) -> None:
    flow = write(tmp_path / "typed", TYPED)
    before = recorded_versions(platform)
    for bad, named in (("n=many", "'n'"), ("nope=1", "nope")):
        refused = caller.cli("run", str(flow), "-p", bad)
        assert refused.returncode == 1, str(refused)
        assert named in refused.stderr and "Traceback" not in refused.stderr, str(refused)
    with caller.client() as client:
        assert versions(client, "remote_typed") == []
    assert recorded_versions(platform) == before
    assert platform.rows("SELECT id FROM pipelines WHERE name = :n", n="remote_typed") == []


def test_a_viewer_cannot_run_remotely(platform: Platform, caller: Caller, tmp_path: Path) -> None:
    flow = write(tmp_path / "typed", TYPED)
    before = recorded_versions(platform)
    refused = caller.cli("run", str(flow), role=VIEWER)
    assert refused.returncode == 1, str(refused)
    assert "needs the editor role" in refused.stderr, str(refused)
    assert "Traceback" not in refused.stderr, str(refused)
    assert recorded_versions(platform) == before
    assert caller.local_runs() == 0
