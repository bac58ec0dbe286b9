"""Real data for the dashboard's browser tests, and a real `treadle up` to show it.

`python tests/e2e/dashboard_support.py` (with the home's TREADLE_HOME in its environment)
runs the quickstart pipeline as a small sweep (each run registers a version of
`breast-cancer`), a cached re-run, and a tracked script whose run name, param and metric
are hostile HTML; points `champion` at version 1, deploys `cancer-api` as a canary of the
challenger, writes a prediction log for it with the model's own predictions (half of it
shifted, so it drifts) and lets a monitor close its windows and raise its alert. It
prints one JSON line with the ids the tests check.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
_NEXT_TO_PYTHON = Path(sys.executable).with_name("treadle")
TREADLE = _NEXT_TO_PYTHON if _NEXT_TO_PYTHON.exists() else REPO / ".venv" / "bin" / "treadle"
TOKEN = re.compile(r"trd_[A-Za-z0-9_\-]{20,}")
API = "/api/v1/projects/default"
QUICKSTART = REPO / "examples" / "quickstart" / "pipeline.py"
MODEL, DEPLOYMENT, MONITOR, EXPERIMENT = "breast-cancer", "cancer-api", "cancer-watch", "sweep"
# user-controlled strings that are markup: the dashboard must show them as text
EVIL_RUN = "<img src=x onerror=window.__xss=1>"
EVIL_KEY = "</script><script>window.__xss=2</script>"
EVIL_VALUE = "<b onmouseover=window.__xss=3>bold</b>"
SWEEP = (0.05, 0.5, 2.0)
WINDOW = 60


def _predictions(store: Any, home: Path, model: Any, frame: Any) -> None:
    """Two windows of the training data's distribution, then two shifted ones."""
    from treadle.monitoring.monitor import predictions_dir
    from treadle.serving.predlog import PredictionLog

    features = frame.drop(columns="target")
    columns = [str(c) for c in features.columns]
    log = PredictionLog(predictions_dir(home, "default", DEPLOYMENT), flush_seconds=0.05)
    rng = random.Random(7)
    for shift in (1.0, 1.0, 1.8, 1.8):
        sample = features.sample(n=WINDOW, random_state=rng.randrange(1000)) * shift
        outputs = [int(p) for p in model.predict(sample)]
        for row, output in zip(sample.to_numpy().tolist(), outputs, strict=True):
            version = 1 if rng.random() < 0.8 else 2
            latency = rng.uniform(2.0, 9.0) * (1.5 if shift > 1 else 1.0)
            log.append(uuid.uuid4().hex, MODEL, version, latency, columns, [row], [output], None)
        log.flush()
        time.sleep(0.05)
    log.close()


def seed() -> dict[str, Any]:
    import pandas as pd
    from sklearn.datasets import load_breast_cancer

    import treadle
    from treadle.config import load_settings
    from treadle.engine import RunOptions, find_pipeline, run_pipeline
    from treadle.monitoring.monitor import Monitoring, new_monitor
    from treadle.registry import set_alias
    from treadle.registry.refs import ModelRef
    from treadle.serving.deployments import deploy, make_spec
    from treadle.store import open_store

    settings = load_settings().replace(user="admin")
    store = open_store(settings)
    project = store.projects.ensure_project(settings.project, "admin")
    training, source = find_pipeline(str(QUICKSTART))
    options = RunOptions(experiment=EXPERIMENT)
    runs = [run_pipeline(training, {"c": c, "rows": 300}, store, options, source) for c in SWEEP]
    cached = run_pipeline(training, {"c": SWEEP[1], "rows": 300}, store, options, source)
    for run in (*runs, cached):
        if run.state.value != "SUCCEEDED":
            raise SystemExit(f"seed run {run.id} is {run.state.value}")
    with treadle.start_run(
        experiment=EXPERIMENT, name=EVIL_RUN, params={EVIL_KEY: EVIL_VALUE}, settings=settings
    ) as evil:
        for step in range(3):
            treadle.log_metric(EVIL_KEY, 0.5 + step / 10, step=step)
    set_alias(f"{MODEL}@1", "champion", reason="first release", store=store)
    set_alias(f"{MODEL}@2", "challenger", reason="best of the sweep", store=store)
    deploy(store, project.id, DEPLOYMENT, make_spec(ModelRef(MODEL, alias="champion")))
    deploy(
        store,
        project.id,
        DEPLOYMENT,
        make_spec(
            ModelRef(MODEL, alias="champion"),
            policy="canary",
            candidate="challenger",
            canary_weight=0.2,
        ),
    )
    monitor = store.monitoring.create_monitor(
        new_monitor(
            project_id=project.id,
            name=MONITOR,
            deployment=DEPLOYMENT,
            window_size=WINDOW,
            rules=["drift: drift_share > 0.3 for 1 windows"],
            user="admin",
        )
    )
    frame = pd.DataFrame(load_breast_cancer(as_frame=True).frame)
    _predictions(store, settings.home, runs[0].outputs["train"], frame)
    windows = Monitoring(store, clock=lambda: time.time() + 5).tick()
    alerts = store.monitoring.list_alerts(project.id, monitor.id)
    out = {
        "runs": [r.id for r in runs],
        "cached_run": cached.id,
        "evil_run": evil.id,
        "windows": windows,
        "alerts": len(alerts),
        "pipeline": training.name,
    }
    store.close()
    return out


# -- the platform the browser looks at --------------------------------------------------


def env(home: Path) -> dict[str, str]:
    """The parent's environment minus TREADLE_* settings and proxies, plus the home."""
    out = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TREADLE_") and "proxy" not in k.lower()
    }
    out.update(TREADLE_HOME=str(home), PYTHONUNBUFFERED="1", NO_COLOR="1")
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class Platform:
    proc: subprocess.Popen[bytes]
    url: str
    admin: str
    """The admin's token, as `treadle up` printed it."""
    seeded: dict[str, Any]
    viewer: str = ""

    def api(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {token or self.admin}"}
        with httpx.Client(base_url=self.url, timeout=30, trust_env=False) as http:
            response = http.request(method, path, headers=headers, **kwargs)
        assert response.status_code < 300, f"{method} {path}: {response.text[:400]}"
        return response.json() if response.content else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)


def start(root: Path) -> Platform:
    """Seed a home, start `treadle up` on it, and add a viewer, a schedule and a fired
    trigger through the API."""
    home = root / "home"
    home.mkdir(parents=True)
    seeded = subprocess.run(
        [sys.executable, str(Path(__file__))],
        cwd=REPO,
        env=env(home),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr
    port = free_port()
    err = root / "up.err"
    with err.open("wb") as sink:
        proc = subprocess.Popen(
            [str(TREADLE), "up", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO,
            env=env(home),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, err.read_text()
        printed = TOKEN.findall(err.read_text())
        if printed and "is up on" in err.read_text():
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"treadle up was not ready:\n{err.read_text()}")
    p = Platform(proc, url, printed[0], json.loads(seeded.stdout.strip().splitlines()[-1]))
    p.api("POST", "/api/v1/users", json={"name": "vera"})
    p.api("PUT", "/api/v1/projects/default/members/vera", json={"role": "viewer"})
    p.viewer = p.api("POST", "/api/v1/users/vera/tokens", json={"name": "browser"})["token"]
    p.api(
        "POST",
        f"{API}/schedules",
        json={"name": "nightly", "pipeline": "training", "cron": "0 3 * * *"},
    )
    p.api(
        "POST",
        f"{API}/triggers",
        json={"name": "on-drift", "kind": "manual", "pipeline": "training"},
    )
    fired = p.api("POST", f"{API}/triggers/on-drift/fire", json={"payload": {"c": "0.5"}})
    p.seeded["fired_run"] = fired["run_id"]
    deadline = time.monotonic() + 60
    while p.api("GET", f"{API}/runs/{fired['run_id']}")["state"] in ("PENDING", "RUNNING"):
        assert time.monotonic() < deadline, "the fired run did not finish"
        time.sleep(0.1)
    return p


if __name__ == "__main__":
    os.environ.setdefault("TREADLE_PROJECT", "default")
    print(json.dumps(seed()))
    sys.exit(0)
