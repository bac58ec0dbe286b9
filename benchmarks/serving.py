"""Serving benchmark: `treadle serve` side by side with a bare Starlette app and with
`mlflow models serve`, all loaded by wrk on 127.0.0.1 in one run.

The model is a scikit-learn LogisticRegression on 20 float features (make_classification,
10,000 rows, random_state=0); every request carries one row. treadle runs with signature
validation, metrics and prediction logging on: with its default settings at 16
connections on /predict, /invocations and V2 infer, then with micro-batching at 64
connections, then with `--no-batch` at 16. The bare app takes 16 and 64 connections,
mlflow 16. Before it is measured, every server must answer a known row with the
model's prediction; after a treadle server stops, its prediction log must hold one row
per prediction it made, or count it as dropped.

Prints one JSON object per line. mlflow lives in a virtualenv of its own,
benchmarks/.mlflow-venv, created on the first run; if it cannot be installed, a line
says why and the rest runs without it.

    .venv/bin/python benchmarks/bench_serving.py [--duration 10] [--no-mlflow]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import pickle
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
BARE_APP = HERE / "bare_app.py"
MLFLOW_VENV = HERE / ".mlflow-venv"

MODEL_NAME = "bench-clf"
ALIAS = "champion"
ROWS, FEATURES, SEED = 10_000, 20, 0
COLUMNS = [f"x{i}" for i in range(FEATURES)]

CONCURRENCY = 16
BATCH_CONCURRENCY = 64
DURATION_S = 10
WRK_THREADS = 2
WARM_UP_REQUESTS = 300
TARGET_RPS = 3000.0
TARGET_P99_MS = 10.0

START_TIMEOUT_S = 60.0
MLFLOW_START_TIMEOUT_S = 180.0
MLFLOW_INSTALL_TIMEOUT_S = 1800.0
# mlflow reports usage to its vendor unless told not to; this benchmark talks to
# 127.0.0.1 only.
NO_TELEMETRY = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}

ENDPOINTS = ("predict", "invocations", "v2_infer")


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


# -- wrk ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: dict[str, int]

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())


TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match[1]) * TIME_UNITS_MS[match[2]]


def parse_wrk(output: str) -> WrkResult:
    """The figures of wrk's `--latency` report (wrk prints the error lines only when
    there were errors)."""
    percentiles = dict(re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", output, re.M))
    done = re.search(r"^\s+(\d+) requests in (\S+?),", output, re.M)
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    if "50" not in percentiles or "99" not in percentiles or done is None or rate is None:
        raise RuntimeError(f"could not read wrk's report:\n{output}")
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return WrkResult(
        requests=int(done[1]),
        seconds=_ms(done[2]) / 1000,
        requests_per_s=float(rate[1]),
        p50_ms=_ms(percentiles["50"]),
        p99_ms=_ms(percentiles["99"]),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=dict(
            zip(
                ("connect", "read", "write", "timeout"),
                (int(n) for n in sockets.groups()) if sockets else (0, 0, 0, 0),
                strict=True,
            )
        ),
    )


def wrk_binary() -> str:
    found = shutil.which("wrk") or ("/usr/bin/wrk" if Path("/usr/bin/wrk").exists() else None)
    if found is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    return found


def wrk_script(folder: Path, name: str, body: bytes) -> Path:
    """A Lua script that makes wrk POST `body` as JSON on every request."""
    path = folder / f"{name}.lua"
    path.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [==[{body.decode()}]==]\n"
    )
    return path


def run_wrk(url: str, script: Path, connections: int, duration_s: int) -> WrkResult:
    cmd = [
        wrk_binary(),
        f"-t{WRK_THREADS}",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` exited {proc.returncode}:\n{proc.stderr}")
    return parse_wrk(proc.stdout)


# -- processes ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Server:
    """One server process in a process group of its own, so that stopping it also stops
    whatever it started (`mlflow models serve` runs uvicorn as a child)."""

    def __init__(
        self,
        label: str,
        cmd: list[str],
        env: dict[str, str],
        port: int,
        ready_path: str,
        log_path: Path,
    ) -> None:
        self.label, self.cmd, self.env = label, cmd, env
        self.port, self.ready_path, self.log_path = port, ready_path, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.label} exited {self.proc.returncode} before it was ready:\n"
                    f"{self.log_tail()}"
                )
            with contextlib.suppress(OSError, http.client.HTTPException):
                if http_get(self.port, self.ready_path)[0] == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(
            f"{self.label} was not ready after {timeout_s:.0f} s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Ctrl-C first, the way a user stops it (treadle writes out its prediction log
        then), harder signals only if it does not go."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        for sig, wait_s in ((signal.SIGINT, 20.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(wait_s)
        # A child may outlive the leader; the group id stays reserved while it does.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        self.proc = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def running(server: Server, timeout_s: float = START_TIMEOUT_S) -> Iterator[Server]:
    try:
        server.start(timeout_s)
        yield server
    finally:
        server.stop()


def warm_up(port: int, path: str, body: bytes, check: Callable[[Any], bool]) -> None:
    """A few hundred requests on one connection, the first of them checked against the
    model's own prediction, so that a server answering fast and wrong cannot pass."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for i in range(WARM_UP_REQUESTS):
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
            if response.status != 200:
                raise RuntimeError(f"POST {path} answered {response.status}: {data[:500]!r}")
            if i == 0 and not check(json.loads(data)):
                raise RuntimeError(f"POST {path} answered a wrong prediction: {data[:500]!r}")
    finally:
        conn.close()


# -- the model and the request bodies -------------------------------------------------------


def train() -> tuple[Any, np.ndarray]:
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    X, y = make_classification(n_samples=ROWS, n_features=FEATURES, random_state=SEED)
    # max_iter above the default so that the fit converges without a warning
    return LogisticRegression(max_iter=1000).fit(X, y), X


def bodies(row: list[float]) -> dict[str, bytes]:
    split = {"columns": COLUMNS, "data": [row]}
    v2 = {"inputs": [{"name": "input-0", "shape": [1, FEATURES], "datatype": "FP64", "data": row}]}
    return {
        "predict": json.dumps(split).encode(),
        "invocations": json.dumps({"dataframe_split": split}).encode(),
        "v2_infer": json.dumps(v2).encode(),
    }


def treadle_paths() -> dict[str, str]:
    return {
        "predict": "/predict",
        "invocations": "/invocations",
        "v2_infer": f"/v2/models/{MODEL_NAME}/infer",
    }


def treadle_command() -> list[str]:
    script = Path(sys.executable).parent / "treadle"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "treadle"]


def isolated_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TREADLE_")}
    env["TREADLE_HOME"] = str(home)
    return env


def register(home: Path, model: Any, X: np.ndarray) -> None:
    import treadle
    from treadle.config import load_settings
    from treadle.store import open_store

    store = open_store(load_settings({"TREADLE_HOME": str(home)}))
    try:
        version = treadle.register_model(
            model, MODEL_NAME, input_example=X[:5], training_data=X, store=store
        )
        treadle.set_alias(f"{MODEL_NAME}@{version.version}", ALIAS, store=store)
    finally:
        store.close()


def default_batching(env: dict[str, str]) -> str:
    """What `treadle serve` does without --batch/--no-batch, from its own help."""
    proc = subprocess.run(
        [*treadle_command(), "serve", "--help"],
        env={**env, "COLUMNS": "300", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
    )
    found = re.search(r"\[default:\s*(no-batch|batch)\s*\]", proc.stdout)
    return {"batch": "on", "no-batch": "off"}[found[1]] if found else "unknown"


def logged_rows(folder: Path) -> int:
    from treadle.serving.predlog import read_predictions

    if not folder.exists():
        return 0
    rows: int = read_predictions(folder).num_rows
    return rows


def batch_rows(port: int) -> tuple[float, float]:
    """Rows and predict calls so far, from the server's /metrics (0, 0 if it does not
    report them)."""
    status, text = http_get(port, "/metrics", timeout=10)
    rows = calls = 0.0
    if status == 200:
        for line in text.decode().splitlines():
            if line.startswith("treadle_batch_rows_sum{"):
                rows += float(line.rsplit(" ", 1)[1])
            elif line.startswith("treadle_batch_rows_count{"):
                calls += float(line.rsplit(" ", 1)[1])
    return rows, calls


def served_and_dropped(port: int) -> tuple[int, int]:
    """Successful predictions and dropped log records, from the server's /metrics."""
    status, text = http_get(port, "/metrics", timeout=10)
    if status != 200:
        raise RuntimeError(f"GET /metrics answered {status}")
    served = dropped = 0.0
    for line in text.decode().splitlines():
        if line.startswith("treadle_requests_total{") and 'status="200"' in line:
            served += float(line.rsplit(" ", 1)[1])
        elif line.startswith("treadle_prediction_log_dropped "):
            dropped = float(line.rsplit(" ", 1)[1])
    return int(served), int(dropped)


# -- mlflow, in its own virtualenv --------------------------------------------------------

MLFLOW_SAVE = """
import sys
import mlflow.sklearn
import pandas as pd
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

X, y = make_classification(n_samples={rows}, n_features={features}, random_state={seed})
frame = pd.DataFrame(X, columns={columns!r})
model = LogisticRegression(max_iter=1000).fit(frame, y)
mlflow.sklearn.save_model(model, sys.argv[1], input_example=frame.head(5))
print(mlflow.__version__)
"""


def mlflow_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME") and not k.startswith("TREADLE_")
    }
    # `mlflow models serve` starts `uvicorn` by name: it must find the one in its venv.
    env["PATH"] = f"{MLFLOW_VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **NO_TELEMETRY}


def ensure_mlflow() -> tuple[Path | None, str]:
    """The venv's python and mlflow's version, or None and why it could not be had."""
    python = MLFLOW_VENV / "bin" / "python"
    probe = [str(python), "-c", "import mlflow, sklearn, pandas; print(mlflow.__version__)"]

    def probe_ok() -> str | None:
        if not python.exists():
            return None
        proc = subprocess.run(probe, capture_output=True, text=True, env=mlflow_env())
        return proc.stdout.strip() if proc.returncode == 0 else None

    version = probe_ok()
    if version:
        return python, version
    if not python.exists():
        base = shutil.which("python3") or sys.executable
        proc = subprocess.run(
            [base, "-m", "venv", str(MLFLOW_VENV)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            return None, f"python3 -m venv failed: {proc.stderr.strip()[-500:]}"
    import sklearn

    # The same scikit-learn as treadle's if the index has it, so both serve the same model.
    for wanted in ([f"scikit-learn=={sklearn.__version__}"], ["scikit-learn"]):
        cmd = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        try:
            proc = subprocess.run(
                [*cmd, "mlflow", *wanted],
                capture_output=True,
                text=True,
                env=mlflow_env(),
                timeout=MLFLOW_INSTALL_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            return None, f"pip install mlflow took over {MLFLOW_INSTALL_TIMEOUT_S:.0f} s"
        if proc.returncode == 0:
            break
    version = probe_ok()
    if version:
        return python, version
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line] or [proc.stderr]
    return None, "pip install mlflow scikit-learn failed: " + " | ".join(errors)[-800:]


def mlflow_serve_flags(env: dict[str, str]) -> list[str]:
    """Serve from the venv itself: `--env-manager local` where this mlflow has it, the
    older `--no-conda` where it does not."""
    proc = subprocess.run(
        [str(MLFLOW_VENV / "bin" / "mlflow"), "models", "serve", "--help"],
        capture_output=True,
        text=True,
        env=env,
    )
    return ["--env-manager", "local"] if "--env-manager" in proc.stdout else ["--no-conda"]


# -- where the CPU went during a measurement ---------------------------------------------
# These machines are shared: the cores the server and wrk did not use tell whether
# something else was running while a figure was taken.


def _busy_ticks() -> tuple[int, int]:
    """Ticks the CPUs spent busy in processes, and in interrupts (where the kernel
    moves loopback traffic, on behalf of no process)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return user + nice + system + steal, irq + softirq


def _group_ticks(pgid: int) -> int:
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # after the command: state, ppid, pgrp, ... utime and stime are the 12th and 13th
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total


@contextlib.contextmanager
def cpu_use(server: Server) -> Iterator[dict[str, float]]:
    """Cores used by the server, by wrk and by everything else while the block runs
    (Linux; empty elsewhere)."""
    figures: dict[str, float] = {}
    if server.proc is None or not Path("/proc/stat").exists():
        yield figures
        return
    pgid, tick = server.proc.pid, os.sysconf("SC_CLK_TCK")
    (busy, irq), own = _busy_ticks(), _group_ticks(pgid)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    yield figures
    seconds = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_s = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    server_s = (_group_ticks(pgid) - own) / tick
    busy_after, irq_after = _busy_ticks()
    other_s = (busy_after - busy) / tick - server_s - wrk_s
    figures["server_cpu_cores"] = round(server_s / seconds, 2)
    figures["wrk_cpu_cores"] = round(wrk_s / seconds, 2)
    figures["irq_cpu_cores"] = round((irq_after - irq) / tick / seconds, 2)
    figures["other_cpu_cores"] = round(max(0.0, other_s) / seconds, 2)


# -- the benchmark ------------------------------------------------------------------------

Target = Callable[[WrkResult], dict[str, Any]]


def no_target(result: WrkResult) -> dict[str, Any]:
    return {"target": None, "meets_target": None}


def c16_target(result: WrkResult) -> dict[str, Any]:
    return {
        "target": {"requests_per_s_min": TARGET_RPS, "p99_ms_max": TARGET_P99_MS, "errors": 0},
        "meets_target": result.requests_per_s >= TARGET_RPS
        and result.p99_ms <= TARGET_P99_MS
        and result.errors == 0,
    }


def more_than(reference: WrkResult | None) -> Target:
    """Micro-batching's target: more requests/s than the bare app at the same load."""

    def target(result: WrkResult) -> dict[str, Any]:
        if reference is None:
            return no_target(result)
        return {
            "target": {"requests_per_s_above": reference.requests_per_s, "errors": 0},
            "meets_target": result.requests_per_s > reference.requests_per_s and result.errors == 0,
        }

    return target


@dataclass
class Bench:
    tmp: Path
    duration_s: int
    results: dict[tuple[str, str, int], WrkResult]
    cpu: dict[tuple[str, str, int], dict[str, float]] = field(default_factory=dict)

    def measure(
        self,
        key: str,
        server: Server,
        endpoint: str,
        path: str,
        body: bytes,
        connections: int,
        target: Target = no_target,
        batches: bool = False,
    ) -> WrkResult:
        script = wrk_script(self.tmp, f"{key}-{endpoint}", body)
        url = f"http://127.0.0.1:{server.port}{path}"
        extra: dict[str, Any] = {}
        rows, calls = batch_rows(server.port) if batches else (0.0, 0.0)
        with cpu_use(server) as cpu:
            result = run_wrk(url, script, connections, self.duration_s)
        if batches:
            rows_after, calls_after = batch_rows(server.port)
            if calls_after > calls:
                extra["rows_per_predict_call"] = round(
                    (rows_after - rows) / (calls_after - calls), 2
                )
        self.results[(key, endpoint, connections)] = result
        self.cpu[(key, endpoint, connections)] = cpu
        emit(
            benchmark=f"serving_{key}_{endpoint}_c{connections}",
            server=server.label,
            endpoint=path,
            concurrency=connections,
            requests_per_s=result.requests_per_s,
            p50_ms=round(result.p50_ms, 3),
            p99_ms=round(result.p99_ms, 3),
            requests=result.requests,
            errors=result.errors,
            non_2xx=result.non_2xx,
            socket_errors=result.socket_errors,
            duration_s=result.seconds,
            **cpu,
            **extra,
            **target(result),
        )
        return result


def run_bare(bench: Bench, model_file: Path, body: bytes, expected: int) -> None:
    port = free_port()
    cmd = [sys.executable, str(BARE_APP), str(model_file), "--port", str(port)]
    label = "bare Starlette + uvicorn"
    server = Server(label, cmd, dict(os.environ), port, "/ping", bench.tmp / "bare.log")
    with running(server):
        warm_up(port, "/predict", body, lambda r: r.get("predictions") == [expected])
        for connections in (CONCURRENCY, BATCH_CONCURRENCY):
            bench.measure("bare", server, "predict", "/predict", body, connections)


def run_treadle(
    bench: Bench,
    home: Path,
    key: str,
    flags: list[str],
    row_bodies: dict[str, bytes],
    expected: int,
    plan: list[tuple[int, Target]],
) -> bool:
    """One `treadle serve` process through every endpoint; True if its prediction log
    accounts for every prediction it made."""
    port = free_port()
    args = ["serve", f"{MODEL_NAME}@{ALIAS}", "--port", str(port), *flags, "--log-predictions"]
    label = f"treadle {' '.join(args[:2] + args[4:])}"
    log_folder = home / "predictions"
    before = logged_rows(log_folder)
    server = Server(
        label,
        [*treadle_command(), *args],
        isolated_env(home),
        port,
        "/v2/health/ready",
        bench.tmp / f"{key}.log",
    )
    paths = treadle_paths()
    checks: dict[str, Callable[[Any], bool]] = {
        "predict": lambda r: r.get("predictions") == [expected],
        "invocations": lambda r: r.get("predictions") == [expected],
        "v2_infer": lambda r: r.get("outputs", [{}])[0].get("data") == [expected],
    }
    with running(server):
        for endpoint in ENDPOINTS:
            warm_up(port, paths[endpoint], row_bodies[endpoint], checks[endpoint])
        for connections, target in plan:
            for endpoint in ENDPOINTS:
                bench.measure(
                    key,
                    server,
                    endpoint,
                    paths[endpoint],
                    row_bodies[endpoint],
                    connections,
                    target,
                    batches=True,
                )
        served, dropped = served_and_dropped(port)
    logged = logged_rows(log_folder) - before
    complete = logged + dropped == served
    emit(
        benchmark=f"serving_{key}_prediction_log",
        server=label,
        served_predictions=served,
        logged_rows=logged,
        dropped=dropped,
        complete=complete,
    )
    return complete


def prepare_mlflow(tmp: Path) -> tuple[Path | None, str]:
    """mlflow's venv and the model saved with it, or None and the reason."""
    python, version = ensure_mlflow()
    if python is None:
        return None, version
    folder = tmp / "mlflow-model"
    script = MLFLOW_SAVE.format(rows=ROWS, features=FEATURES, seed=SEED, columns=COLUMNS)
    proc = subprocess.run(
        [str(python), "-c", script, str(folder)],
        capture_output=True,
        text=True,
        env=mlflow_env(),
        cwd=tmp,
    )
    if proc.returncode != 0:
        return None, f"mlflow.sklearn.save_model failed: {proc.stderr.strip()[-800:]}"
    return folder, version


def run_mlflow(bench: Bench, model_dir: Path, body: bytes, expected: int) -> None:
    port = free_port()
    env = mlflow_env()
    mlflow = str(MLFLOW_VENV / "bin" / "mlflow")
    cmd = [mlflow, "models", "serve", "-m", str(model_dir), "-h", "127.0.0.1", "-p", str(port)]
    cmd += mlflow_serve_flags(env)
    server = Server("mlflow models serve", cmd, env, port, "/ping", bench.tmp / "mlflow.log")
    with running(server, MLFLOW_START_TIMEOUT_S):
        warm_up(port, "/invocations", body, lambda r: r.get("predictions") == [expected])
        bench.measure("mlflow", server, "invocations", "/invocations", body, CONCURRENCY)


def emit_ratios(results: dict[tuple[str, str, int], WrkResult]) -> None:
    """treadle's requests/s over the bare app's and over mlflow's, at the same load."""
    bare = {c: results.get(("bare", "predict", c)) for c in (CONCURRENCY, BATCH_CONCURRENCY)}
    mlflow = results.get(("mlflow", "invocations", CONCURRENCY))
    for (key, endpoint, connections), result in results.items():
        if not key.startswith("treadle"):
            continue
        fields: dict[str, Any] = {"treadle_requests_per_s": result.requests_per_s}
        reference = bare.get(connections)
        if reference is not None:
            fields["bare_requests_per_s"] = reference.requests_per_s
            fields["treadle_over_bare"] = round(result.requests_per_s / reference.requests_per_s, 3)
        if mlflow is not None and connections == CONCURRENCY:
            fields["mlflow_requests_per_s"] = mlflow.requests_per_s
            fields["treadle_over_mlflow"] = round(result.requests_per_s / mlflow.requests_per_s, 2)
        emit(benchmark=f"serving_ratio_{key}_{endpoint}_c{connections}", **fields)


def ensure_starlette() -> None:
    """The bare app needs Starlette, which treadle itself does not depend on."""
    import importlib.util

    if importlib.util.find_spec("starlette") is not None:
        return
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "starlette",
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"the bare app needs starlette; pip could not install it:\n{proc.stderr}")


def treadle_revision() -> dict[str, Any]:
    """The commit measured, and whether src/ had changes not yet committed."""
    root = HERE.parent

    def git(*args: str) -> str | None:
        with contextlib.suppress(OSError):
            proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
            if proc.returncode == 0:
                return proc.stdout.strip()
        return None

    status = git("status", "--porcelain", "--", "src")
    return {
        "treadle_commit": git("rev-parse", "--short", "HEAD"),
        "treadle_src_modified": bool(status) if status is not None else None,
    }


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    wrk = subprocess.run([wrk_binary(), "-v"], capture_output=True, text=True)
    import sklearn

    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "wrk": (wrk.stdout or wrk.stderr).split(" Copyright")[0].strip(),
        "scikit_learn": sklearn.__version__,
        "numpy": np.__version__,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=DURATION_S, help="seconds per wrk run")
    parser.add_argument("--no-mlflow", action="store_true", help="leave mlflow out")
    args = parser.parse_args()
    wrk_binary()
    ensure_starlette()
    complete = True
    with tempfile.TemporaryDirectory(prefix="treadle-bench-serving-") as tmp_name:
        tmp = Path(tmp_name)
        home = tmp / "home"
        # mlflow first: installing it the first time would otherwise load the machine
        # while the others are measured.
        mlflow_model, mlflow_note = (None, "left out (--no-mlflow)")
        if not args.no_mlflow:
            mlflow_model, mlflow_note = prepare_mlflow(tmp)
        model, X = train()
        expected = int(model.predict(X[:1])[0])
        row_bodies = bodies(X[0].tolist())
        register(home, model, X)
        model_file = tmp / "model.pkl"
        model_file.write_bytes(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
        batching = default_batching(isolated_env(home))
        emit(
            benchmark="serving_setup",
            **machine(),
            **treadle_revision(),
            mlflow=mlflow_note if mlflow_model is not None else None,
            treadle_default_batching=batching,
            duration_s=args.duration,
            wrk_threads=WRK_THREADS,
        )
        if mlflow_model is None:
            emit(benchmark="serving_mlflow", skipped=True, reason=mlflow_note)

        bench = Bench(tmp, args.duration, {})
        run_bare(bench, model_file, row_bodies["predict"], expected)
        bare_c64 = bench.results.get(("bare", "predict", BATCH_CONCURRENCY))
        # The default settings at 16 connections, and micro-batching at 64: in the same
        # server when batching is on by default, in one started with --batch if not.
        plan = [(CONCURRENCY, c16_target)]
        if batching == "on":
            plan.append((BATCH_CONCURRENCY, more_than(bare_c64)))
        complete &= run_treadle(bench, home, "treadle_default", [], row_bodies, expected, plan)
        if batching != "on":
            complete &= run_treadle(
                bench,
                home,
                "treadle_batch",
                ["--batch"],
                row_bodies,
                expected,
                [(BATCH_CONCURRENCY, more_than(bare_c64))],
            )
        complete &= run_treadle(
            bench,
            home,
            "treadle_no_batch",
            ["--no-batch"],
            row_bodies,
            expected,
            [(CONCURRENCY, c16_target)],
        )
        if mlflow_model is not None:
            run_mlflow(bench, mlflow_model, row_bodies["invocations"], expected)
        emit_ratios(bench.results)
    if not complete:
        print("a treadle server's prediction log is missing predictions", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
