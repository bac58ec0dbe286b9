"""The step entrypoint run as a Kubeflow Pipelines pod runs it: the container's argv from
the compiled YAML, with the executor input the KFP driver would give (checked against
KFP's own ExecutorInput message), in a subprocess; outputs must land where KFP looks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from treadle.config import load_settings
from treadle.engine import find_pipeline
from treadle.engine.entry import run_id_for
from treadle.integrations.kfp import KfpOptions, compile_pipeline
from treadle.store import open_store
from treadle.types import RunState, StepState

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SHAPES = ROOT / "tests" / "resources" / "kfp_shapes.py"
QUICKSTART = ROOT / "examples" / "quickstart" / "pipeline.py"
IMAGE = "registry.example.com/treadle-steps@sha256:" + "c" * 64
JOB = "5b1f8c52-0000-4000-8000-000000000001"


class Pod:
    """Runs a compiled pipeline's tasks the way KFP's launcher does, one at a time."""

    def __init__(
        self,
        target: str,
        tmp: Path,
        env: dict[str, str],
        job: str = JOB,
        job_name: str = "fan-run-1",
    ) -> None:
        self.job, self.job_name = job, job_name
        pipeline, source = find_pipeline(target)
        assert source is not None
        self.workdir = Path(source).parent  # the image's working directory
        compiled = compile_pipeline(pipeline, source, KfpOptions(image=IMAGE))
        self.spec = yaml.safe_load(compiled.yaml)
        self.tmp = tmp
        self.env = env
        self.outputs: dict[str, Path] = {}

    def executor_input(
        self, task: str, params: dict[str, Any], artifacts: dict[str, list[str]], key: str
    ) -> dict[str, Any]:
        component = self.spec["components"][f"comp-{task.replace('_', '-')}"]
        declared = component.get("outputDefinitions", {})
        out = self.tmp / "minio" / key
        message = {
            "inputs": {
                "parameterValues": params,
                "artifacts": {
                    name: {"artifacts": [{"name": name, "uri": uri} for uri in uris]}
                    for name, uris in artifacts.items()
                },
            },
            "outputs": {
                "artifacts": {
                    name: {
                        "artifacts": [
                            {"name": name, "type": d["artifactType"], "uri": str(out / name)}
                        ]
                    }
                    for name, d in declared.get("artifacts", {}).items()
                },
                "parameters": {
                    name: {"outputFile": str(out / "params" / name)}
                    for name in declared.get("parameters", {})
                },
                "outputFile": str(out / "executor_output.json"),
            },
        }
        # the shape KFP's driver hands over, or this raises
        json_format.ParseDict(message, pipeline_spec_pb2.ExecutorInput())
        return message

    def run(
        self,
        task: str,
        params: dict[str, Any] | None = None,
        artifacts: dict[str, list[str]] | None = None,
        key: str | None = None,
        executor: str | None = None,
    ) -> tuple[subprocess.CompletedProcess[str], Path]:
        key = key or task
        message = self.executor_input(task, params or {}, artifacts or {}, key)
        container = self.spec["deploymentSpec"]["executors"][
            executor or f"exec-{task.replace('_', '-')}"
        ]["container"]
        assert container["image"] == IMAGE
        argv = [
            arg.replace("{{$}}", json.dumps(message))
            .replace("{{$.pipeline_job_uuid}}", self.job)
            .replace("{{$.pipeline_job_name}}", self.job_name)
            for arg in container["args"]
        ]
        assert container["command"][0] == "python"
        done = subprocess.run(
            [sys.executable, *container["command"][1:], *argv],
            cwd=self.workdir,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        return done, self.tmp / "minio" / key

    def ok(self, task: str, **kwargs: Any) -> Path:
        done, out = self.run(task, **kwargs)
        assert done.returncode == 0, done.stderr[-3000:]
        return out


def metadata(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "treadle-artifact.json").read_text())


def value(folder: Path) -> Any:
    meta = metadata(folder)
    sha = meta["sha256"]
    return json.loads((folder / "objects" / sha[:2] / sha).read_bytes())


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def test_fan_out_runs_as_kfp_pods_and_is_recorded(tmp_path: Path, home: Path) -> None:
    pod = Pod(f"{SHAPES}:fan", tmp_path, {"TREADLE_HOME": str(home)})
    numbers = pod.ok("numbers", params={"n": 3})
    assert value(numbers / "output") == [1, 2, 3]
    items = json.loads((numbers / "params" / "treadle_items_output").read_text())
    assert items == [0, 1, 2]
    written = json.loads((numbers / "executor_output.json").read_text())
    assert written["parameterValues"]["treadle_items_output"] == [0, 1, 2]

    squares = []
    for i in reversed(items):  # KFP does not promise the order of loop iterations
        out = pod.ok(
            "square",
            params={"treadle_index": i},
            artifacts={"x": [str(numbers / "output")]},
            key=f"square-{i}",
        )
        assert metadata(out / "output")["index"] == i
        squares.append(str(out / "output"))
    total = pod.ok("total", artifacts={"values": squares})
    assert value(total / "output") == {"total": 14.0, "count": 3.0}
    shown = json.loads((total / "executor_output.json").read_text())
    assert shown["artifacts"]["output"]["artifacts"][0]["metadata"] == {
        "total": 14.0,
        "count": 3.0,
    }

    settings = load_settings({"TREADLE_HOME": str(home)})
    store = open_store(settings)
    try:
        run = store.runs.get_run(run_id_for(JOB))
        assert run.executor == "kfp" and run.name == "fan-run-1"
        steps = store.runs.list_steps(run.id)
        assert sorted(s.node for s in steps) == [
            "numbers",
            "square[0]",
            "square[1]",
            "square[2]",
            "total",
        ]
        assert all(s.state is StepState.SUCCEEDED for s in steps)
        assert store.tracking.latest_metrics(run.id) == {"total": 14.0, "count": 3.0}
        total_step = next(s for s in steps if s.node == "total")
        assert len(store.artifacts.step_input_ids(total_step.id)) == 3

        done, _ = pod.run(
            "treadle_finish_run",
            params={"status": {"state": "SUCCEEDED", "pipelineJobResourceName": "fan-run-1"}},
        )
        assert done.returncode == 0, done.stderr
        assert store.runs.get_run(run.id).state is RunState.SUCCEEDED
    finally:
        store.close()


def test_every_parameter_type_reaches_the_step(tmp_path: Path, home: Path) -> None:
    pod = Pod(f"{SHAPES}:every_type", tmp_path, {"TREADLE_HOME": str(home)})
    numbers = pod.ok("numbers", params={"n": 4})
    split = pod.ok("split_2", params={"pivot": 3}, artifacts={"values": [str(numbers / "output")]})
    given = {
        "rate": 0.75,
        "label": "nightly",
        "verbose": True,
        "weights": [2.0, 3.0],
        "config": {"depth": 5},
    }
    described = pod.ok(
        "describe",
        params=given,
        artifacts={"low": [str(split / "low")], "high": [str(split / "high")]},
    )
    assert value(described / "output") == {
        "low": [1, 2, 3],
        "high": [4],
        "note": None,
        **given,
    }


def test_an_unreachable_store_warns_and_the_step_still_runs(tmp_path: Path) -> None:
    env = {"TREADLE_DB_URL": "postgresql+psycopg://kfp:secret@127.0.0.1:9/treadle"}
    env["TREADLE_HOME"] = str(tmp_path / "home")
    pod = Pod(f"{SHAPES}:fan", tmp_path, env)
    done, out = pod.run("numbers", params={"n": 2})
    assert done.returncode == 0, done.stderr
    assert "cannot open the store" in done.stderr and "not recorded" in done.stderr
    assert "secret" not in done.stderr
    assert value(out / "output") == [1, 2]


def test_a_failing_step_fails_the_pod_with_its_error(tmp_path: Path, home: Path) -> None:
    pod = Pod(f"{SHAPES}:fan", tmp_path, {"TREADLE_HOME": str(home)})
    numbers = pod.ok("numbers", params={"n": 2})
    done, out = pod.run(
        "square", params={"treadle_index": 5}, artifacts={"x": [str(numbers / "output")]}
    )
    assert done.returncode == 1
    assert "IndexError" in done.stderr
    assert not (out / "output").exists()


def test_typed_artifacts_and_metrics_land_where_kfp_reads_them(tmp_path: Path, home: Path) -> None:
    pod = Pod(f"{SHAPES}:typed", tmp_path, {"TREADLE_HOME": str(home)})
    table = pod.ok("make_table", params={"rows": 3})
    assert metadata(table / "output")["kind"] == "dataset"
    model = pod.ok("fit", artifacts={"table": [str(table / "output")]})
    assert metadata(model / "output")["kind"] == "model"
    score = pod.ok(
        "score",
        artifacts={"model": [str(model / "output")], "table": [str(table / "output")]},
    )
    shown = json.loads((score / "executor_output.json").read_text())
    assert shown["artifacts"]["output"]["artifacts"][0]["metadata"] == {
        "rows": 3.0,
        "weight": 3.0,
    }


def test_quickstart_steps_hand_dataframes_over(tmp_path: Path, home: Path) -> None:
    pod = Pod(str(QUICKSTART), tmp_path, {"TREADLE_HOME": str(home)})
    load = pod.ok("load", params={"rows": 120})
    assert metadata(load / "output")["materializer"] == "parquet"
    done, split = pod.run("split", artifacts={"data": [str(load / "output")]})
    assert done.returncode == 0, done.stderr
    assert "train rows: 90, test rows: 30" in done.stdout  # the step's print, in the pod log
    assert metadata(split / "output_0")["materializer"] == "parquet"
    assert metadata(split / "output_1")["python_type"].endswith("DataFrame")
