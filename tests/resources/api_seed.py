"""Real data for the platform-server security tests: run with the home's environment
(TREADLE_HOME, TREADLE_DB_URL) before `treadle up` starts, prints one JSON line.

Project `alpha` gets two runs of the same pipeline (the second answered from the cache),
two versions of a registered model with `champion` and `challenger` aliases, and a
deployment with two revisions; project `beta` gets one run of the very same pipeline, so
its steps have the same cache keys as alpha's and would hit alpha's cache if the cache
crossed projects.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from treadle import log_artifact, log_metric, log_param, pipeline, register_model, step
from treadle.config import load_settings
from treadle.engine import run_pipeline
from treadle.registry import set_alias
from treadle.registry.refs import ModelRef
from treadle.serving.deployments import deploy, make_spec
from treadle.store import open_store
from treadle.store.records import PolicyRecord, new_id

MODEL = "sec-model"
SEED_POLICY = {
    "name": "seed-policy",
    "on": {"event": "monitor.alert", "where": {"monitor": "nobody"}},
    "run": {"pipeline": "seed_flow"},
    "register": {"model": "sec-model"},
}
DEPLOYMENT = "sec-svc"
SECRET_LINE = "the log line of project alpha's load step"


class Constant:
    """A python-flavor model: enough to be registered, never loaded by these tests."""

    requirements: list[str] = []

    def __init__(self, value: float) -> None:
        self.value = value

    def predict(self, frame: Any) -> list[float]:
        return [self.value for _ in range(len(frame))]

    def save(self, path: Path) -> None:
        (Path(path) / "value.json").write_text(json.dumps({"value": self.value}))

    @classmethod
    def load(cls, path: Path) -> Constant:
        return cls(json.loads((Path(path) / "value.json").read_text())["value"])


@step
def load(n: int) -> list[int]:
    print(SECRET_LINE)
    return list(range(n))


@step
def train(values: list[int], register: bool) -> float:
    log_param("model", "constant")
    mean = sum(values) / len(values)
    log_metric("loss", 1.0 / (1 + mean), step=0)
    log_metric("loss", 0.5 / (1 + mean), step=1)
    log_artifact({"mean": mean}, "summary")
    if register:
        register_model(Constant(mean), MODEL, metrics={"loss": 0.1})
    return mean


@pipeline
def seed_flow(n: int = 5, register: bool = True) -> None:
    train(load(n), register)


def main() -> None:
    base = load_settings()
    out: dict[str, Any] = {}
    for project in ("alpha", "beta"):
        store = open_store(base.replace(project=project, user="seed"))
        runs = [run_pipeline(seed_flow, {}, store)]
        if project == "alpha":
            # the same pipeline again: every step is answered from alpha's own cache
            runs.append(run_pipeline(seed_flow, {}, store))
        for run in runs:
            if run.state.value != "SUCCEEDED":
                raise SystemExit(f"seed run {run.id} in {project} is {run.state.value}")
        record = store.projects.ensure_project(project, "seed")
        model = store.models.get_model(record.id, MODEL)
        first = store.models.get_version(model.id, 1)
        seeded: dict[str, Any] = {
            "project_id": record.id,
            "runs": [r.id for r in runs],
            "experiment_id": runs[0].record.experiment_id,
            "pipeline_version_id": runs[0].record.pipeline_version_id,
            "model_id": model.id,
            "version_id": first.id,
            "manifest_sha": first.manifest_sha,
        }
        if project == "alpha":
            # a second version and two revisions, so a rollback has somewhere to go
            register_model(Constant(0.5), MODEL, metrics={"loss": 0.05}, store=store)
            deployment, _ = deploy(
                store, record.id, DEPLOYMENT, make_spec(ModelRef(MODEL, version=1))
            )
            set_alias(f"{MODEL}@2", "champion", store=store)
            set_alias(f"{MODEL}@1", "challenger", store=store)
            deploy(store, record.id, DEPLOYMENT, make_spec(ModelRef(MODEL, alias="champion")))
            seeded["deployment_id"] = deployment.id
            # a policy that once acted on an event, so its run can be read
            policy = store.policies.put_policy(
                PolicyRecord(
                    new_id(), record.id, SEED_POLICY["name"], SEED_POLICY, False, "seed", 0.0
                )
            )
            event, _ = store.automation.record_event(
                record.id, "monitor.alert", "seed-alert", {"monitor": "nobody"}
            )
            claimed = store.policies.claim(policy, event.id, [], 0.0)
            assert claimed is not None
            seeded["policy_run_id"] = claimed.id
        out[project] = seeded
        store.close()
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
