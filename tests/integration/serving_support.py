"""Real model servers for the serving tests: `treadle serve` / `treadle deployments serve`
started as processes on a free 127.0.0.1 port, spoken to over HTTP, always stopped.

A registry home with three versions of `clf` (a LogisticRegression on f0..f19) is built
once per session and copied for each module, so a module may move aliases, change
deployments or damage objects without another module seeing it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from treadle.config import load_settings
from treadle.store import Store, open_store

REPO = Path(__file__).resolve().parents[2]
RESOURCES = REPO / "tests" / "resources"
REGISTER = RESOURCES / "srv_models.py"
_NEXT_TO_PYTHON = Path(sys.executable).with_name("treadle")
TREADLE = _NEXT_TO_PYTHON if _NEXT_TO_PYTHON.exists() else REPO / ".venv" / "bin" / "treadle"
USER = "srv-tests"

MODEL = "clf"
FEATURES = [f"f{i}" for i in range(20)]
# v1 and v2 disagree on about a fifth of random rows: enough to tell who answered
VERSION_C = {1: 1.0, 2: 0.001, 3: 0.05}
READY_SECONDS = 60.0


def env(home: Path) -> dict[str, str]:
    """The parent's environment minus every TREADLE_* setting and any proxy, plus a home
    of the test's own."""
    out = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TREADLE_") and "proxy" not in k.lower()
    }
    out.update(
        TREADLE_HOME=str(home),
        TREADLE_USER=USER,
        COLUMNS="200",
        NO_COLOR="1",
        PYTHONUNBUFFERED="1",
    )
    return out


@dataclasses.dataclass(frozen=True)
class Completed:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (
            f"$ treadle {' '.join(self.args)}\nexit {self.returncode}\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )


def treadle(home: Path, *args: str, timeout: float = 120) -> Completed:
    proc = subprocess.run(
        [str(TREADLE), *args],
        cwd=REPO,
        env=env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return Completed(tuple(args), proc.returncode, proc.stdout, proc.stderr)


def ok(home: Path, *args: str) -> Completed:
    result = treadle(home, *args)
    assert result.returncode == 0, str(result)
    return result


# -- the registry home ----------------------------------------------------------------


def template_home(factory: pytest.TempPathFactory) -> Path:
    """Built once per session: clf v1..v3, champion -> v1, challenger -> v2."""
    home = factory.getbasetemp() / "serving-template"
    if (home / ".complete").exists():
        return home
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    cs = [str(VERSION_C[v]) for v in sorted(VERSION_C)]
    proc = subprocess.run(
        [sys.executable, str(REGISTER), MODEL, *cs],
        cwd=REPO,
        env=env(home),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ok(home, "models", "alias", MODEL, "champion", "1")
    ok(home, "models", "alias", MODEL, "challenger", "2")
    (home / ".complete").touch()
    return home


def module_home(factory: pytest.TempPathFactory, label: str) -> Path:
    """A private copy of the template home for one test module."""
    home = factory.mktemp(label) / "home"
    shutil.copytree(template_home(factory), home, ignore=shutil.ignore_patterns(".complete"))
    return home


@contextmanager
def opened(home: Path) -> Iterator[Store]:
    store = open_store(load_settings({"TREADLE_HOME": str(home), "TREADLE_USER": USER}))
    try:
        yield store
    finally:
        store.close()


_MODELS: dict[tuple[str, int], Any] = {}


def reference_model(home: Path, version: int) -> Any:
    """The version loaded in this process, the way a user would with load_model."""
    import treadle

    key = (str(home), version)
    if key not in _MODELS:
        with opened(home) as store:
            _MODELS[key] = treadle.load_model(f"{MODEL}@{version}", store=store)
    return _MODELS[key]


def expected(home: Path, version: int, rows: Sequence[Sequence[float]]) -> list[Any]:
    import pandas as pd

    frame = pd.DataFrame([list(map(float, r)) for r in rows], columns=FEATURES)
    return list(np.asarray(reference_model(home, version).predict(frame)).tolist())


def random_rows(n: int, seed: int = 0) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    return [[round(float(v), 6) for v in row] for row in rng.normal(size=(n, len(FEATURES)))]


def telling_rows(home: Path, n: int, seed: int = 0) -> list[list[float]]:
    """Rows on which v1 and v2 predict differently, so the answer shows who gave it."""
    pool = random_rows(40 * n, seed)
    one, two = expected(home, 1, pool), expected(home, 2, pool)
    rows = [r for r, a, b in zip(pool, one, two, strict=True) if a != b][:n]
    assert len(rows) == n, "the two versions agree too often to tell them apart"
    return rows


def corrupt_version(home: Path, version: int) -> Path:
    """Flip one byte of the version's model file in the artifact store (objects are
    read-only files addressed by their sha256); returns the object's path. The version
    must never have been loaded from this home, or its checked copy in the model cache
    would be used instead."""
    from treadle.models.format import read_manifest

    with opened(home) as store:
        project = store.projects.ensure_project(store.settings.project, USER)
        model = store.models.get_model(project.id, MODEL)
        record = store.models.get_version(model.id, version)
        sha = read_manifest(record.manifest_sha, store.objects).files["model.skops"]
        path = store.objects.root / "objects" / sha[:2] / sha
    assert not (home / "model-cache" / record.manifest_sha).exists()
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def records(rows: Sequence[Sequence[float]]) -> list[dict[str, float]]:
    return [dict(zip(FEATURES, row, strict=True)) for row in rows]


# -- servers --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def client(base_url: str, timeout: float = 30.0) -> httpx.Client:
    # trust_env off: a proxy from the environment must never see these requests
    return httpx.Client(base_url=base_url, timeout=timeout, trust_env=False)


@dataclasses.dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    home: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (uvicorn's clean shutdown, which flushes the prediction log), then
        SIGKILL if it hangs; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return int(self.proc.returncode)


def start(home: Path, *args: str, ready_seconds: float = READY_SECONDS) -> Server:
    """`treadle <args> --port P` as a process, returned once /v2/health/ready says 200."""
    port = free_port()
    log = home.parent / f"server-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(TREADLE), *args, "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO,
            env=env(home),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(proc, port, log, home)
    deadline = time.monotonic() + ready_seconds
    with client(server.url, timeout=2.0) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(
                    f"treadle {' '.join(args)} exited {proc.returncode} before it was ready:\n"
                    + server.output()
                )
            try:
                if http.get("/v2/health/ready").status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    server.stop()
    raise AssertionError(
        f"treadle {' '.join(args)} not ready after {ready_seconds}s:\n" + server.output()
    )


@contextmanager
def running(home: Path, *args: str) -> Iterator[Server]:
    server = start(home, *args)
    try:
        yield server
    finally:
        server.stop()


def wait_for(condition: Callable[[], bool], seconds: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


# -- reading answers ------------------------------------------------------------------


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample called `name` in Prometheus text, with its labels."""
    from prometheus_client.parser import text_string_to_metric_families

    return [
        (dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def assert_error(
    response: httpx.Response, status: int, field: str | None, *fragments: str
) -> dict[str, Any]:
    """A refused request: the status, a JSON body whose `error` says what and whose
    `field` names where."""
    assert response.status_code == status, f"{response.status_code}: {response.text[:500]}"
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    if field is not None:
        assert body.get("field") == field, body
    for fragment in fragments:
        assert fragment in body["error"], body
    return body
