"""`treadle demo`: the whole loop on this machine, from nothing, in a few minutes.

It starts the platform in a temporary home, builds and deploys the example training
pipeline, trains and registers a first model, deploys it, drives simulated traffic whose
labels arrive a little later, shifts the traffic's distribution half-way, and lets the
platform do the rest by itself: the monitor sees the drift, the policy retrains on recent
data, gates the new model, canaries it and promotes it (or rolls it back). Every stage is
timed; the data come from scikit-learn's bundled breast-cancer set, with a seed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from treadle.cli import common
from treadle.errors import ConflictError, InvalidInputError, NotFoundError, TreadleError

if TYPE_CHECKING:
    from treadle.client import Client


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class Stage:
    name: str
    seconds: float = 0.0
    said: str = ""


class Story:
    """The stages, timed, shown as they go."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self.stages: list[Stage] = []
        self.began = time.monotonic()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[Stage]:
        stage = Stage(name)
        started = time.monotonic()
        with self.console.status(f"[bold]{name}[/]…"):
            yield stage
        stage.seconds = time.monotonic() - started
        self.stages.append(stage)
        self.console.print(
            f"[green]✓[/] {name} [dim]({common.seconds(stage.seconds)})[/]"
            + (f" — {stage.said}" if stage.said else "")
        )

    def summary(self) -> None:
        from rich.table import Table

        table = Table(title="the loop, stage by stage", box=None)
        for column in ("stage", "time", "what happened"):
            table.add_column(column)
        for s in self.stages:
            table.add_row(s.name, common.seconds(s.seconds), s.said)
        self.console.print(table)
        self.console.print(f"total {common.seconds(time.monotonic() - self.began)}")


class Platform:
    """`treadle up` in a home of its own, as a child process."""

    def __init__(self, home: Path, port: int) -> None:
        self.home, self.port = home, port
        self.url = f"http://127.0.0.1:{port}"
        self.log = home.parent / "up.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        env = {**os.environ, "TREADLE_HOME": str(self.home)}
        for key in ("TREADLE_URL", "TREADLE_TOKEN", "TREADLE_DB_URL", "TREADLE_ARTIFACT_URL"):
            env.pop(key, None)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "treadle", "up", "--port", str(self.port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            token = re.search(r"(trd_[A-Za-z0-9_-]+)", text)
            if token and "treadle is up" in text:
                return token.group(1)
            if self.proc.poll() is not None:
                raise ConflictError(f"`treadle up` ended: {text[-500:]}")
            time.sleep(0.1)
        raise ConflictError("`treadle up` did not start within 60 s", f"see {self.log}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(2)  # Ctrl-C: it stops its model servers too
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


DATASETS: dict[str, dict[str, Any]] = {
    # the ten `mean ...` measurements of a tumour grow
    "breast_cancer": {"loader": "load_breast_cancer", "shift": list(range(10)), "task": "class"},
    # body mass, blood pressure and two blood serum measurements rise
    "diabetes": {"loader": "load_diabetes", "shift": [2, 3, 8, 9], "task": "regression"},
}


class World:
    """What is sent, before and after the change: rows of a bundled dataset, jittered,
    and (after the change) with some measurements scaled up — their labels stay what they
    were, so a model trained before the change is wrong more often after it."""

    def __init__(self, seed: int, dataset: str = "breast_cancer") -> None:
        import sklearn.datasets

        config = DATASETS[dataset]
        loader = getattr(sklearn.datasets, config["loader"])
        kwargs = {"scaled": False} if dataset == "diabetes" else {}
        data = loader(as_frame=True, **kwargs).frame
        data = data.rename(columns=lambda c: c.replace(" ", "_"))
        self.columns = [c for c in data.columns if c != "target"]
        self.rows = data[self.columns].to_numpy()
        self.labels = data["target"].to_numpy()
        self.shift = set(config["shift"])
        # measurements with a few values (a sex, a count) are sent as they are
        self.jitter = [len(set(data[c])) > 10 for c in self.columns]
        self.classes = config["task"] == "class"
        self.rng = random.Random(seed)
        self.shifted = False

    def sample(self) -> tuple[dict[str, float], Any]:
        i = self.rng.randrange(len(self.rows))
        values = [
            float(v) * (1 + self.rng.gauss(0, 0.02)) if jitter else float(v)
            for v, jitter in zip(self.rows[i], self.jitter, strict=True)
        ]
        if self.shifted:
            values = [v * 1.8 if j in self.shift else v for j, v in enumerate(values)]
        label = int(self.labels[i]) if self.classes else float(self.labels[i])
        return dict(zip(self.columns, values, strict=True)), label


class Traffic:
    """Requests to the model server from a few threads; each label follows a moment
    later through POST /feedback, as a label from the real world would."""

    def __init__(self, url: str, world: World, rate: float, label_delay: float = 0.3) -> None:
        self.url, self.world, self.rate, self.label_delay = url, world, rate, label_delay
        self.sent = self.labelled = self.errors = 0
        self.right = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pending: list[tuple[float, str, int]] = []
        self._lock = threading.Lock()

    def start(self, threads: int = 4) -> None:
        for i in range(threads):
            t = threading.Thread(target=self._send, args=(threads,), daemon=True, name=f"demo-{i}")
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._label, daemon=True, name="demo-labels")
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)

    def _send(self, threads: int) -> None:
        import httpx

        with httpx.Client(base_url=self.url, timeout=10) as http:
            while not self._stop.is_set():
                row, label = self.world.sample()
                request_id = uuid.uuid4().hex
                try:
                    answer = http.post(
                        "/predict", json={"rows": [row]}, headers={"x-request-id": request_id}
                    )
                    answer.raise_for_status()
                    predicted = answer.json()["predictions"][0]
                    with self._lock:
                        self.sent += 1
                        if self.world.classes:
                            self.right += int(predicted == label)
                        else:
                            self.right += abs(float(predicted) - label)
                        self._pending.append(
                            (time.monotonic() + self.label_delay, request_id, label)
                        )
                except Exception:
                    with self._lock:
                        self.errors += 1
                self._stop.wait(threads / self.rate)

    def _label(self) -> None:
        import httpx

        with httpx.Client(base_url=self.url, timeout=10) as http:
            while not self._stop.is_set() or self._pending:
                now = time.monotonic()
                with self._lock:
                    due = [p for p in self._pending if p[0] <= now]
                    self._pending = [p for p in self._pending if p[0] > now]
                if due:
                    body = {"feedback": [{"request_id": r, "label": y} for _, r, y in due]}
                    with contextlib.suppress(Exception):
                        if http.post("/feedback", json=body).status_code == 202:
                            self.labelled += len(due)
                if self._stop.is_set() and not due:
                    break
                time.sleep(0.05)

    def quality(self) -> str:
        """Live accuracy (classes) or mean absolute error (regression) since the reset."""
        value = self.right / self.sent if self.sent else 0.0
        return f"live {'accuracy' if self.world.classes else 'MAE'} {value:.3f}"

    def reset(self) -> None:
        with self._lock:
            self.sent = self.right = 0


def _wait(what: str, check: Any, timeout: float, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise ConflictError(f"the demo waited {timeout:g} s for {what}", "see the platform's log")


def _run_to_end(client: Client, run_id: str, timeout: float = 120) -> Any:
    run = _wait(
        "the training run",
        lambda: r if (r := client.get_run(run_id)).state.finished else None,
        timeout,
    )
    if run.state.value != "SUCCEEDED":
        raise ConflictError(f"run {run_id[:8]} {run.state.value}: {run.error}")
    return run


def demo(
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the platform running at the end.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the simulated traffic.")] = 7,
    pipeline_file: Annotated[
        Path, typer.Option("--pipeline", help="The training pipeline to build and deploy.")
    ] = Path("examples/loop/pipeline.py"),
    policy_file: Annotated[
        Path,
        typer.Option(
            "--policy",
            help="The policy the platform follows: a YAML file, or a Python file defining "
            "`policy` (see `treadle policies apply --help`).",
        ),
    ] = Path("examples/loop/policy.yaml"),
    rate: Annotated[float, typer.Option(help="Requests per second of simulated traffic.")] = 60,
    dataset: Annotated[
        str, typer.Option(help="The traffic: breast_cancer (classifier) or diabetes (regressor).")
    ] = "breast_cancer",
    home: Annotated[
        Path | None, typer.Option(help="The platform's home (default: a temporary one).")
    ] = None,
) -> None:
    """Run the whole loop on this machine, from nothing.

    The platform, pipeline CI/CD, training, serving, traffic, drift, retraining, gate,
    canary and promotion, with a summary of every stage at the end.

    Example: treadle demo --keep
    """
    from treadle.client import Client
    from treadle.engine import find_pipeline
    from treadle.loop.policy import parse, read_policies
    from treadle.packaging import build_package

    for path in (pipeline_file, policy_file):
        if not path.is_file():
            raise NotFoundError(f"no {path}", "run the demo from treadle's source folder")
    if dataset not in DATASETS:
        raise InvalidInputError(f"--dataset {dataset!r} is not one of {', '.join(DATASETS)}")
    specs = read_policies(policy_file)
    if len(specs) != 1:
        raise InvalidInputError(
            f"{policy_file} defines {len(specs)} policies; the demo follows one",
            "give it a file that defines `policy`",
        )
    spec = specs[0]
    policy = parse(spec)
    if policy.canary is None or "monitor" not in policy.where:
        raise InvalidInputError(
            f"{policy_file} needs a canary deployment and on.where.monitor for the demo"
        )
    deployment, monitor, model = policy.canary.deployment, policy.where["monitor"], policy.model
    console = common.console()
    story = Story(console)
    root = Path(tempfile.mkdtemp(prefix="treadle-demo-"))
    platform = Platform(home or root / "home", _free_port())
    traffic: Traffic | None = None
    try:
        with story.stage("start the platform") as s:
            token = platform.start()
            client = Client(platform.url, token, project="default")
            s.said = f"treadle up on {platform.url} (home {platform.home})"
        with story.stage("build and deploy the training pipeline") as s:
            found, source = find_pipeline(str(pipeline_file))
            package = build_package(found, source or str(pipeline_file))
            client.deploy_package(package.data)
            s.said = f"{found.name} {package.manifest.version} is the current version"
        with story.stage("train and register the first model") as s:
            run = client.submit_run(found.name, {})
            finished = _run_to_end(client, run.id)
            version = max(client.list_versions(model), key=lambda v: v.version)
            client.set_alias(model, "champion", version.version)
            metrics = finished_metrics(client, finished.id)
            shown = ", ".join(f"{k} {v:.3f}" for k, v in sorted(metrics.items()))
            s.said = f"{model}@{version.version} is champion (test {shown})"
        with story.stage("deploy it") as s:
            port = _free_port()
            client.deploy(f"{model}@champion", deployment, port=port)
            serving = f"http://127.0.0.1:{port}"
            _wait("the model server", lambda: _ready(serving), 60)
            s.said = f"{deployment} serves {model}@champion on {serving}"
        with story.stage("watch it and write the loop down") as s:
            rules = ["drift: drift_share > 0.3 for 2 windows"]
            rules.append("accuracy < 0.8" if World(seed, dataset).classes else "rmse > 80")
            client.create_monitor(
                monitor,
                deployment,
                window_kind="rows",
                window_size=150,
                thresholds={"label_wait": 1.0},
                rules=rules,
            )
            client.put_policy(spec)
            s.said = f"monitor {monitor} (150-prediction windows); policy {policy.name}"
        world = World(seed, dataset)
        traffic = Traffic(serving, world, rate)
        with story.stage("traffic as it was at training time") as s:
            traffic.start()
            _wait("two windows", lambda: len(client.monitor_windows(monitor, 5)) >= 2, 60)
            s.said = f"{traffic.sent} requests, {traffic.quality()}, {_drift_said(client, monitor)}"
        with story.stage("the world changes: the drift is detected") as s:
            traffic.reset()
            world.shifted = True
            alert = _wait(
                "the drift alert",
                lambda: next((a for a in client.list_alerts(monitor) if a.name == "drift"), None),
                90,
            )
            s.said = (
                f"alert {alert.name} ({alert.rule}) after {traffic.sent} shifted requests; "
                f"the champion's {traffic.quality()}"
            )
        with story.stage("retrain, gate, canary, promote or roll back") as s:
            done = _wait(
                "the policy to finish",
                lambda: next(
                    (r for r in client.policy_runs(policy.name) if r.state != "running"), None
                ),
                150,
                every=0.5,
            )
            s.said = f"{done.state}: {done.steps[-1]['detail']}"
        with story.stage("traffic after the loop") as s:
            time.sleep(2)  # the model server swaps in the new revision
            traffic.reset()
            time.sleep(4)
            s.said = f"{traffic.quality()} over {traffic.sent} requests"
        traffic.stop()
        traffic = None
        report = root / "report.html"
        from treadle.monitoring.report import render_html

        report.write_text(
            render_html(
                client.get_monitor(monitor),
                list(reversed(client.monitor_windows(monitor, 500))),
                client.list_alerts(monitor),
            )
        )
        console.print()
        console.print("[bold]what the policy did[/]")
        for step in done.steps:
            console.print(f"  {step['step']:<9} {step['status']:<12} {step['detail']}")
        console.print()
        story.summary()
        console.print(f"report: {report}")
        if keep:
            console.print(
                f"the platform keeps running: {platform.url} (dashboard at {platform.url}/, "
                f"API docs at {platform.url}/docs); export TREADLE_URL={platform.url} "
                f"TREADLE_TOKEN={token}; Ctrl-C stops it"
            )
            with contextlib.suppress(KeyboardInterrupt):
                while platform.proc is not None and platform.proc.poll() is None:
                    time.sleep(1)
    except TreadleError:
        console.print(f"the platform's log: {platform.log}")
        raise
    finally:
        if traffic is not None:
            traffic.stop()
        platform.stop()
        if not keep and home is None:
            shutil.rmtree(root / "home", ignore_errors=True)


def finished_metrics(client: Client, run_id: str) -> dict[str, float]:
    return client.latest_metrics(run_id)


def _ready(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _drift_said(client: Client, monitor: str) -> str:
    latest = client.monitor_windows(monitor, 1)
    if not latest:
        return "no window yet"
    metrics = latest[0].stats.get("metrics", {})
    share = metrics.get("drift_share")
    return f"drift share {share:.2f}" if share is not None else latest[0].status
