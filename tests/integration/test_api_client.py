"""`treadle.Client` and the CLI's remote mode against a real `treadle up`, over real HTTP.

One home per module: two quickstart runs (`breast-cancer` v1 and v2, champion -> v1,
challenger -> v2) and a deployment `bc` following the champion, then `treadle up` on it.
Reading commands must print the same through the server as on the home itself; changes
go through the server's routes, which record the caller; refusals come back as
treadle's own errors.
"""

from __future__ import annotations

import dataclasses
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from serving_support import REPO, TREADLE, Completed, env, free_port, opened

from treadle.client import Client, remote_store
from treadle.errors import (
    AccessError,
    ConfigError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    StoreUnavailableError,
)
from treadle.registry import resolve
from treadle.store.records import MetricRecord

pytestmark = [pytest.mark.slow, pytest.mark.every_backend]

QUICKSTART = "examples/quickstart/pipeline.py"
MODEL = "breast-cancer"
DEPLOYMENT = "bc"
TOKEN = re.compile(r"trd_[A-Za-z0-9_\-]{20,}")
SUMMARY = re.compile(r"^run ([0-9a-f]{32}) SUCCEEDED in ", re.MULTILINE)


@dataclasses.dataclass
class Platform:
    home: Path
    url: str
    token: str
    runs: tuple[str, str]
    """The first run (c=0.5, every step computed) and the second (c=0.05: load and split
    answered from the cache)."""

    def client(self, token: str | None = None) -> Client:
        # trust_env off: a proxy from the environment must never see these requests
        return Client(
            self.url, self.token if token is None else token, project="default", trust_env=False
        )

    def cli(self, *args: str, remote: bool = True, token: str | None = None) -> Completed:
        extra = {"TREADLE_URL": self.url, "TREADLE_TOKEN": token or self.token} if remote else {}
        proc = subprocess.run(
            [str(TREADLE), *args],
            cwd=REPO,
            env={**env(self.home), **extra},
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        return Completed(tuple(args), proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, remote: bool = True) -> str:
        result = self.cli(*args, remote=remote)
        assert result.returncode == 0, str(result)
        return result.stdout


def _seed(home: Path) -> tuple[str, str]:
    def local(*args: str) -> Completed:
        proc = subprocess.run(
            [str(TREADLE), *args], cwd=REPO, env=env(home), capture_output=True, text=True
        )
        result = Completed(tuple(args), proc.returncode, proc.stdout, proc.stderr)
        assert proc.returncode == 0, str(result)
        return result

    ids = []
    for c in ("0.5", "0.05"):
        found = SUMMARY.findall(local("run", QUICKSTART, "-p", f"c={c}", "-e", "demo").stdout)
        assert len(found) == 1
        ids.append(found[0])
    local("models", "alias", MODEL, "champion", "1")
    local("models", "alias", MODEL, "challenger", "2")
    local("deploy", f"{MODEL}@champion", "--name", DEPLOYMENT)
    return ids[0], ids[1]


@pytest.fixture(scope="module")
def platform(
    tmp_path_factory: pytest.TempPathFactory, make_home: Callable[..., Path], backend: str
) -> Iterator[Platform]:
    home = make_home(tmp_path_factory.mktemp("client") / "home", backend)
    runs = _seed(home)
    port = free_port()
    log = home.parent / "up.err"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [str(TREADLE), "up", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO,
            env=env(home),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while "treadle is up" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        tokens = TOKEN.findall(log.read_text())
        assert len(set(tokens)) == 1, log.read_text()
        yield Platform(home, url, tokens[0], runs)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)


def _model_artifact(platform: Platform) -> str:
    with opened(platform.home) as store:
        found = [
            a.id for _, _, a in store.artifacts.run_artifacts(platform.runs[0]) if a.kind == "model"
        ]
    assert len(found) == 1
    return found[0]


# -- the client reads what the home holds -----------------------------------------------


def test_client_reads_the_records_the_home_holds(platform: Platform) -> None:
    first, second = platform.runs
    with platform.client() as client, opened(platform.home) as store:
        project = store.projects.get_project("default")
        assert client.healthy()
        me = client.me()
        assert me.user.name == "admin" and me.projects == {"default": "owner"}
        assert client.get_project() == project
        assert client.list_runs() == store.runs.list_runs(project.id)
        assert [r.id for r in client.list_runs(experiment="demo", state="SUCCEEDED")] == [
            second,
            first,
        ]
        assert client.get_run(first[:8]) == store.runs.get_run(first)
        assert client.list_experiments() == store.projects.list_experiments(project.id)
        assert client.get_experiment("demo") == store.projects.find_experiment(project.id, "demo")
        for run in (first, second):
            steps = store.runs.list_steps(run)
            assert client.list_steps(run) == steps
            assert client.get_step(steps[-1].id) == steps[-1]
            assert client.get_params(run) == store.tracking.get_params(run)
            assert client.metric_history(run) == store.tracking.metric_history(run)
            assert client.latest_metrics(run) == store.tracking.latest_metrics(run)
            outputs = [(o.step_run, o.name, o.artifact) for o in client.run_outputs(run)]
            assert outputs == store.artifacts.run_artifacts(run)
            assert client.run_artifacts(run) == [a for _, _, a in outputs]
            for s in steps:
                assert client.step_outputs(s.id) == store.artifacts.step_outputs(s.id)
                assert client.step_input_ids(s.id) == store.artifacts.step_input_ids(s.id)
        record = store.runs.get_run(first)
        assert record.pipeline_version_id is not None
        pipeline, version = store.pipelines.get_version(record.pipeline_version_id)
        assert client.get_pipeline_version(version.id) == version
        assert client.list_pipelines() == [pipeline]
        artifact = _model_artifact(platform)
        assert client.get_artifact(artifact[:8]) == store.artifacts.get_artifact(artifact)
        assert client.lineage(artifact) == store.artifacts.lineage(artifact)
        assert "train rows:" in client.logs(first, step="split")

        model = store.models.get_model(project.id, MODEL)
        assert client.list_models() == [model]
        assert client.get_model(MODEL) == model
        versions = store.models.list_versions(model.id)
        assert client.list_versions(MODEL) == versions
        assert client.get_version(MODEL, 2) == versions[1]
        assert client.get_version_by_id(versions[0].id) == versions[0]
        assert client.list_aliases(MODEL) == store.models.list_aliases(model.id)
        assert client.get_alias(MODEL, "champion").version == 1
        assert client.alias_history(MODEL, "challenger") == store.models.alias_history(
            model.id, "challenger"
        )
        deployment = store.deployments.get_deployment(project.id, DEPLOYMENT)
        assert client.list_deployments() == [deployment]
        assert client.get_deployment(DEPLOYMENT) == deployment
        assert client.list_revisions(DEPLOYMENT) == store.deployments.list_revisions(deployment.id)


def test_artifact_bytes_whole_ranged_and_streamed(platform: Platform, tmp_path: Path) -> None:
    artifact = _model_artifact(platform)
    with platform.client() as client, opened(platform.home) as store:
        record = store.artifacts.get_artifact(artifact)
        local = store.objects.get_bytes(record.sha256)
        assert len(local) > 200
        assert client.artifact_bytes(artifact) == local
        assert client.artifact_bytes(artifact, 10, 99) == local[10:100]
        assert client.artifact_bytes(artifact, start=len(local) - 7) == local[-7:]
        assert client.download_artifact(artifact, tmp_path / "model").read_bytes() == local
        version = store.models.get_version(store.models.get_model(record.project_id, MODEL).id, 1)
        assert client.object_bytes(version.manifest_sha) == store.objects.get_bytes(
            version.manifest_sha
        )
        assert client.has_object(record.sha256)
        assert not client.has_object("0" * 64)
    with httpx.Client(trust_env=False) as http:
        response = http.get(
            f"{platform.url}/api/v1/projects/default/artifacts/{artifact}/content",
            headers={"Authorization": f"Bearer {platform.token}", "Range": "bytes=5-14"},
        )
    assert response.status_code == 206
    assert response.content == local[5:15]
    assert response.headers["content-range"] == f"bytes 5-14/{len(local)}"


def test_the_remote_store_serves_the_layers_above_it(platform: Platform) -> None:
    """Code written against the store protocols runs unchanged over the API."""
    first, _ = platform.runs
    with opened(platform.home) as local:
        settings = local.settings
        expected = local.models.get_version(
            local.models.get_model(local.projects.get_project("default").id, MODEL).id, 1
        )
    remote = remote_store(platform.client(), settings.replace(url=platform.url))
    try:
        project = remote.projects.ensure_project("default", "anyone")
        model, version = resolve(remote, project.id, f"{MODEL}@champion")
        assert (model.name, version) == (MODEL, expected)
        deployment = remote.deployments.get_deployment(project.id, DEPLOYMENT)
        revisions = remote.deployments.list_revisions(deployment.id)
        assert remote.deployments.current_revision(deployment.id) == revisions[-1]
        path = remote.objects.verified_path(version.manifest_sha)
        assert path.read_bytes() == remote.objects.get_bytes(version.manifest_sha)
        stamp = time.time()
        remote.tracking.log_metrics([MetricRecord(first, "remote_check", 0.25, 7, stamp)])
        assert [
            (m.value, m.step) for m in remote.tracking.metric_history(first, "remote_check")
        ] == [(0.25, 7)]
        with pytest.raises(ConfigError, match="not available against a treadle server"):
            remote.runs.start_step(remote.runs.list_steps(first)[0])
    finally:
        remote.close()


# -- the CLI prints the same through the server -----------------------------------------

SAME_OUTPUT = [
    ("runs", "list"),
    ("runs", "list", "-e", "demo", "--state", "succeeded", "--limit", "1"),
    ("runs", "show", "{first}"),
    ("runs", "show", "{second}"),
    ("runs", "logs", "{second}"),
    ("runs", "metrics", "{first}"),
    ("runs", "compare", "{first}", "{second}"),
    ("experiments", "list"),
    ("artifacts", "list", "{first}"),
    ("lineage", "{artifact}"),
    ("models", "list"),
    ("models", "versions", MODEL),
    ("models", "show", f"{MODEL}@champion"),
    ("models", "history", MODEL),
    ("deployments", "list"),
    ("deployments", "show", DEPLOYMENT),
    ("runs", "logs", "{first}", "--step", "split"),
    ("runs", "metrics", "{first}", "train_accuracy"),
    ("artifacts", "list", "{second}", "--kind", "model"),
    ("runs", "show", "ffffffff"),
    ("runs", "list", "-e", "no-such-experiment"),
    ("models", "versions", "no-such-model"),
    ("lineage", "ffffffff"),
]


def test_reading_commands_print_the_same_through_the_server(platform: Platform) -> None:
    first, second = platform.runs
    values = {"first": first[:8], "second": second[:8], "artifact": _model_artifact(platform)[:8]}
    commands = [tuple(a.format(**values) for a in args) for args in SAME_OUTPUT]

    def both(args: tuple[str, ...]) -> tuple[Completed, Completed]:
        # --url goes anywhere: before the command, after it, or as --url=URL
        where = len(args[0]) % 3
        remote_args = (
            ("--url", platform.url, *args)
            if where == 0
            else (*args, "--url", platform.url)
            if where == 1
            else (*args, f"--url={platform.url}")
        )
        local = platform.cli(*args, remote=False)
        return local, platform.cli(*remote_args, remote=True)

    with ThreadPoolExecutor(8) as pool:
        pairs = list(pool.map(both, commands))
    for local, remote in pairs:
        assert "Traceback" not in local.stderr + remote.stderr, str(remote)
        assert (remote.returncode, remote.stdout, remote.stderr) == (
            local.returncode,
            local.stdout,
            local.stderr,
        ), f"local:\n{local}\nremote:\n{remote}"
    shows = dict(zip(commands, pairs, strict=True))
    assert "(cached: the output of run" in shows[("runs", "logs", values["second"])][1].stdout
    assert shows[("runs", "show", "ffffffff")][1].returncode == 1


def test_commands_that_need_the_home_refuse_in_one_line(platform: Platform) -> None:
    commands = {
        "db current": ("db", "current"),
        "db upgrade": ("db", "upgrade"),
        "up": ("up",),
    }
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda args: platform.cli(*args), commands.values()))
    for name, result in zip(commands, results, strict=True):
        assert result.returncode == 1, str(result)
        assert "Traceback" not in result.stderr, str(result)
        assert result.stderr.splitlines() == [
            f"error: `treadle {name}` works on a local home only, and TREADLE_URL (or --url) "
            f"points at the server {platform.url}",
            "  unset TREADLE_URL (and drop --url) to use the local home",
        ], str(result)
    with opened(platform.home) as store:  # nothing ran, nothing was deployed
        assert len(store.runs.list_runs(store.projects.get_project("default").id)) == 2


# -- changes go through the server's routes ----------------------------------------------


def test_a_refused_promotion_is_a_409_naming_the_failed_condition(platform: Platform) -> None:
    with platform.client() as client:
        with pytest.raises(ConflictError) as refused:
            client.promote(MODEL, source="challenger", target="champion", require=["f1 >= 2"])
        assert "gate `f1 >= 2` failed" in refused.value.message
        assert refused.value.hint
        assert client.get_alias(MODEL, "champion").version == 1
    with httpx.Client(trust_env=False) as http:
        response = http.post(
            f"{platform.url}/api/v1/projects/default/models/{MODEL}/promote",
            headers={"Authorization": f"Bearer {platform.token}"},
            json={"source": "challenger", "target": "champion", "require": ["auc >= 1.5"]},
        )
    assert response.status_code == 409
    assert "`auc >= 1.5`" in response.json()["error"]

    result = platform.cli(
        "models", "promote", MODEL, "--from", "challenger", "--to", "champion", "-r", "f1 >= 2"
    )
    assert result.returncode == 1, str(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: "), str(result)
    assert "gate `f1 >= 2` failed" in lines[0]


def test_registry_changes_through_the_cli_are_made_as_the_caller(platform: Platform) -> None:
    promoted = platform.ok(
        "models", "promote", MODEL, "--from", "challenger", "--to", "champion", "-r", "f1 >= 0.5"
    )
    assert promoted.splitlines()[-1] == f"promoted: {MODEL}@champion → v2"
    assert promoted.splitlines()[0].startswith("  ✓ f1 >= 0.5  (")
    back = platform.ok("models", "alias", MODEL, "champion", "1")
    assert back.strip() == f"{MODEL}@champion → v1"
    assert platform.ok("models", "trust", MODEL, "1").strip() == f"{MODEL} v1 is trusted"
    assert (
        platform.ok("models", "trust", MODEL, "1", "--revoke").strip()
        == f"{MODEL} v1 is no longer trusted"
    )
    with platform.client() as client:
        events = client.alias_history(MODEL, "champion")[-2:]
        assert [(e.from_version, e.to_version, e.by) for e in events] == [
            (1, 2, "admin"),
            (2, 1, "admin"),
        ]
        assert events[0].reason == "promoted from challenger"
        assert not client.get_version(MODEL, 1).trusted
        actions = [a.action for a in client.audit(limit=10)]
        assert actions[:4] == ["untrust", "trust", "set-alias", "promote"]


def test_traffic_rollback_and_follow_through_the_cli(platform: Platform) -> None:
    def revision_line(*args: str) -> tuple[int, str]:
        out = platform.ok("deployments", *args).strip()
        found = re.fullmatch(rf"{DEPLOYMENT}: revision (\d+) — (.*)", out)
        assert found, out
        return int(found.group(1)), found.group(2)

    start = len(platform.client().list_revisions(DEPLOYMENT))
    assert revision_line("canary", DEPLOYMENT, "--percent", "25%") == (
        start + 1,
        "policy now canary with challenger",
    )
    assert revision_line("shadow", DEPLOYMENT) == (start + 2, "policy now shadow with challenger")
    number, why = revision_line("rollback", DEPLOYMENT)
    assert (number, why) == (
        start + 3,
        f"rollback to revision {start + 1} (v1 primary, v2 canary 25%)",
    )
    assert revision_line("follow", DEPLOYMENT) == (start + 4, "following aliases again")
    assert revision_line("single", DEPLOYMENT) == (start + 5, "policy now single")
    with platform.client() as client:
        revisions = client.list_revisions(DEPLOYMENT)[start:]
        assert {r.created_by for r in revisions} == {"admin"}
        assert [t["role"] for t in revisions[0].targets] == ["primary", "canary"]
        assert revisions[-1].targets[0]["version"] == 1 and len(revisions[-1].targets) == 1
        audit = [a.action for a in client.audit(limit=5)]
        assert audit == ["set-traffic", "follow", "rollback", "set-traffic", "set-traffic"]
    shown = platform.ok("deployments", "show", DEPLOYMENT)
    assert shown == platform.ok("deployments", "show", DEPLOYMENT, remote=False)


# -- refusals are treadle's errors -------------------------------------------------------


def test_refusals_come_back_as_treadle_errors(platform: Platform) -> None:
    with platform.client() as admin:
        with pytest.raises(NotFoundError, match="ffffffff"):
            admin.get_run("ffffffff")
        with pytest.raises(NotFoundError):
            admin.get_model("no-such-model")
        with pytest.raises(InvalidInputError, match="not a valid alias"):
            admin.set_alias(MODEL, "Not An Alias", 1)
        with pytest.raises(InvalidInputError, match="limit"):
            admin.list_runs(limit=0)
        with pytest.raises(NotFoundError):
            admin.for_project("no-such-project").list_runs()

        viewer = f"viewer-{time.monotonic_ns()}"
        admin.create_user(viewer)
        admin.set_member(viewer, "viewer")
        issued = admin.issue_token(viewer, "tests")
        outsider = admin.create_user(f"outsider-{time.monotonic_ns()}")  # in no project
        outsider_token = admin.issue_token(outsider.name, "tests")
    with platform.client(issued.token) as client:
        assert [r.id for r in client.list_runs()] == [platform.runs[1], platform.runs[0]]
        with pytest.raises(PermissionDeniedError, match="editor") as denied:
            client.promote(MODEL, source="challenger", target="champion")
        assert "TREADLE_TOKEN" in denied.value.hint
    for token in ("trd_" + "x" * 40, ""):
        with platform.client(token) as client, pytest.raises(AccessError) as refused:
            client.list_runs()
        assert "TREADLE_TOKEN" in refused.value.message + refused.value.hint
    with (
        Client(f"http://127.0.0.1:{free_port()}", "trd_x", trust_env=False) as nowhere,
        pytest.raises(StoreUnavailableError, match="cannot reach"),
    ):
        nowhere.list_runs()

    lost = platform.cli("runs", "list", token=outsider_token.token)
    assert lost.returncode == 1, str(lost)
    assert lost.stderr.splitlines()[0] == "error: no project 'default'"
    assert "TREADLE_PROJECT" in lost.stderr.splitlines()[1]
    refused_cli = platform.cli("runs", "list", token="trd_" + "y" * 40)
    assert refused_cli.returncode == 1
    assert refused_cli.stderr.splitlines() == [
        "error: the token is not valid",
        "  check TREADLE_TOKEN: `treadle up` prints the first one at its first start",
    ]
    denied_cli = platform.cli("models", "trust", MODEL, "1", token=issued.token)
    assert denied_cli.returncode == 1 and "owner" in denied_cli.stderr, str(denied_cli)
