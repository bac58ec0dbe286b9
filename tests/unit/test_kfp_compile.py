"""Compiling to Kubeflow Pipelines: the YAML is loaded back with the kfp SDK and its
pipeline-spec message, and its tasks, dependencies, inputs and outputs checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format
from kfp import components
from kfp.pipeline_spec import pipeline_spec_pb2
from tests.resources.kfp_shapes import add
from typer.testing import CliRunner

from treadle import pipeline as define
from treadle.cli.app import app
from treadle.engine import find_pipeline
from treadle.errors import DefinitionError, InvalidInputError
from treadle.integrations.kfp import Compiled, KfpOptions, compile_pipeline
from treadle.packaging import build_package, read_package
from treadle.packaging.package import KFP_TARGET, target_file

ROOT = Path(__file__).resolve().parents[2]
SHAPES = ROOT / "tests" / "resources" / "kfp_shapes.py"
QUICKSTART = ROOT / "examples" / "quickstart" / "pipeline.py"
IMAGE = "registry.example.com/treadle-steps@sha256:" + "c" * 64
P = pipeline_spec_pb2.ParameterType


def build(target: str, **options: Any) -> tuple[Compiled, pipeline_spec_pb2.PipelineSpec]:
    pipeline, source = find_pipeline(target)
    assert source is not None
    compiled = compile_pipeline(pipeline, source, KfpOptions(image=IMAGE, **options))
    loaded = components.load_component_from_text(compiled.yaml)  # the SDK reads it back
    assert loaded.name == compiled.name
    spec = json_format.ParseDict(yaml.safe_load(compiled.yaml), pipeline_spec_pb2.PipelineSpec())
    return compiled, spec


def dag(spec: pipeline_spec_pb2.PipelineSpec) -> Any:
    """The tasks inside the exit handler that wraps them."""
    return spec.components["comp-exit-handler-1"].dag


def task_json(spec: pipeline_spec_pb2.PipelineSpec, task: str) -> dict[str, Any]:
    executor = spec.deployment_spec["executors"][f"exec-{task}"]["container"]
    assert executor["image"] == IMAGE
    assert list(executor["command"]) == ["python", "-m", "treadle.cli.kfp_pod"]
    args = list(executor["args"])
    return json.loads(args[args.index("--task") + 1])


def test_quickstart_tasks_dependencies_and_types() -> None:
    compiled, spec = build(str(QUICKSTART))
    assert compiled.pinned and compiled.fixed == {}
    tasks = dag(spec).tasks
    assert set(tasks) == {"load", "split", "train", "evaluate", "register"}
    assert list(tasks["split"].dependent_tasks) == ["load"]
    assert sorted(tasks["evaluate"].dependent_tasks) == ["split", "train"]
    assert sorted(tasks["register"].dependent_tasks) == ["evaluate", "split", "train"]
    model_in = tasks["evaluate"].inputs.artifacts["model"].task_output_artifact
    assert (model_in.producer_task, model_in.output_artifact_key) == ("train", "output")

    outputs = {
        name: component.output_definitions.artifacts for name, component in spec.components.items()
    }
    assert outputs["comp-load"]["output"].artifact_type.schema_title == "system.Dataset"
    assert outputs["comp-train"]["output"].artifact_type.schema_title == "system.Model"
    assert outputs["comp-evaluate"]["output"].artifact_type.schema_title == "system.Metrics"
    assert set(outputs["comp-split"]) == {"output_0", "output_1"}

    params = spec.root.input_definitions.parameters
    assert {k: (v.parameter_type, v.default_value) for k, v in params.items()} == {
        "rows": (P.NUMBER_INTEGER, json_format.ParseDict(500, params["rows"].default_value)),
        "c": (P.NUMBER_DOUBLE, json_format.ParseDict(1.0, params["c"].default_value)),
        "gate": (P.STRING, json_format.ParseDict("accuracy >= 0.9", params["gate"].default_value)),
    }
    train = tasks["train"]
    assert train.retry_policy.max_retry_count == 2
    assert train.caching_options.enable_cache
    assert train.inputs.parameters["c"].component_input_parameter == "pipelinechannel--c"
    described = task_json(spec, "train")
    assert described["ref"].endswith(":train") and described["source"] == "pipeline.py"
    assert described["inputs"] == {
        "c": {"param": "c", "pipeline_param": "c"},
        "data": {"artifact": "data", "mapped": False},
    }
    finish = spec.root.dag.tasks["treadle-finish-run"]
    assert finish.trigger_policy.strategy == finish.trigger_policy.ALL_UPSTREAM_TASKS_COMPLETED
    exit_container = spec.deployment_spec["executors"]["exec-treadle-finish-run"]["container"]
    assert list(exit_container["command"]) == ["python", "-m", "treadle.cli.kfp_pod"]
    exit_args = list(exit_container["args"])
    assert exit_args[exit_args.index("--pipeline") + 1] == "training"
    assert "--finish" in exit_args and "--job-name" in exit_args


def test_the_pod_module_the_yaml_names_is_importable_and_takes_the_entry_arguments() -> None:
    """The YAML names the pod module by a string (the compiler sits below the CLI layer),
    so a rename would only show in a cluster: it must resolve, and parse what the
    compiler writes."""
    import importlib

    from treadle.engine import entry

    pod = importlib.import_module(entry.POD_MODULE)
    assert pod.main is not None
    argv = entry.command({"node": "n"}, "job-1", "name-1", "{}")
    assert argv[:2] == ["-m", entry.POD_MODULE]
    parsed = entry.parse_args(argv[2:])
    assert (parsed.job, parsed.job_name, json.loads(parsed.task)) == (
        "job-1",
        "name-1",
        {"node": "n"},
    )


def test_fan_out_over_an_upstream_output_is_a_parallel_for() -> None:
    _, spec = build(f"{SHAPES}:fan")
    tasks = dag(spec).tasks
    assert set(tasks) == {"numbers", "for-loop-2", "total"}
    loop = tasks["for-loop-2"]
    assert loop.parameter_iterator.items.input_parameter == (
        "pipelinechannel--numbers-treadle_items_output"
    )
    assert list(loop.dependent_tasks) == ["numbers"]
    numbers_out = spec.components["comp-numbers"].output_definitions
    assert numbers_out.parameters["treadle_items_output"].parameter_type == P.LIST
    square = spec.components["comp-for-loop-2"].dag.tasks["square"]
    assert "treadle_index" in square.inputs.parameters
    assert not square.caching_options.enable_cache
    assert square.retry_policy.max_retry_count == 2
    joined = spec.components["comp-total"].input_definitions.artifacts["values"]
    assert joined.is_artifact_list
    assert list(tasks["total"].dependent_tasks) == ["for-loop-2"]
    resources = spec.deployment_spec["executors"]["exec-square"]["container"]["resources"]
    assert resources["resourceCpuLimit"] == "0.5"
    assert resources["resourceMemoryLimit"] == "256Mi"
    assert task_json(spec, "square")["timeout"] == 60.0


def test_fan_out_over_a_constant_and_over_a_list_parameter() -> None:
    _, constant = build(f"{SHAPES}:fan_constant")
    (loop,) = [t for name, t in dag(constant).tasks.items() if name.startswith("for-loop")]
    assert json.loads(loop.parameter_iterator.items.raw) == [0, 1, 2]
    assert task_json(constant, "square")["inputs"]["x"] == {"value": [2, 3, 4], "mapped": True}

    compiled, param = build(f"{SHAPES}:fan_param")
    assert compiled.runtime == {"xs": "list"}
    iterator = dag(param).tasks["for-loop-2"].parameter_iterator
    assert iterator.items.input_parameter == "pipelinechannel--xs"

    _, zipped = build(f"{SHAPES}:fan_zip")
    described = task_json(zipped, "add")
    assert described["inputs"]["y"] == {"value": [10, 20, 30], "mapped": True}
    assert described["mapped"] == ["x", "y"]


def test_every_parameter_type_with_defaults_and_what_is_fixed() -> None:
    compiled, spec = build(f"{SHAPES}:every_type")
    params = spec.root.input_definitions.parameters
    types = {k: v.parameter_type for k, v in params.items()}
    assert types == {
        "n": P.NUMBER_INTEGER,
        "pivot": P.NUMBER_INTEGER,
        "rate": P.NUMBER_DOUBLE,
        "label": P.STRING,
        "verbose": P.BOOLEAN,
        "weights": P.LIST,
        "config": P.STRUCT,
    }
    defaults = {k: json_format.MessageToDict(v.default_value) for k, v in params.items()}
    assert defaults == {
        "n": 5,
        "pivot": 2,
        "rate": 0.25,
        "label": "run",
        "verbose": False,
        "weights": [0.5, 1.5],
        "config": {"depth": 3},
    }
    assert set(compiled.fixed) == {"repeats", "note"}
    assert "shapes the graph" in compiled.fixed["repeats"]
    assert "repeats=2" in spec.pipeline_info.description
    assert set(dag(spec).tasks) == {"numbers", "split", "split-2", "describe"}
    assert task_json(spec, "describe")["inputs"]["note"] == {"value": None, "mapped": False}


def test_compile_time_values_and_a_join_of_several_outputs() -> None:
    _, spec = build(f"{SHAPES}:every_type", params={"repeats": 1})
    assert set(dag(spec).tasks) == {"numbers", "split", "describe"}
    _, joined = build(f"{SHAPES}:collect")
    described = task_json(joined, "join")
    assert described["inputs"]["values"] == {
        "collect": [{"artifact": "values_0"}, {"artifact": "values_1"}, {"value": 100}]
    }
    assert sorted(dag(joined).tasks["join"].dependent_tasks) == ["square", "square-2"]


def test_gpu_and_environment_reach_the_task() -> None:
    _, spec = build(f"{SHAPES}:typed", env={"TREADLE_DB_URL": "postgresql+psycopg://db/treadle"})
    container = spec.deployment_spec["executors"]["exec-fit"]["container"]
    assert container["resources"]["accelerator"]["resourceCount"] == "1"
    assert container["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert {"name": "TREADLE_DB_URL", "value": "postgresql+psycopg://db/treadle"} in list(
        container["env"]
    )
    assert dag(spec).tasks["fit"].retry_policy.backoff_duration.seconds == 1


def test_bad_image_and_bad_parameters_are_refused() -> None:
    pipeline, source = find_pipeline(f"{SHAPES}:fan")
    assert source is not None
    with pytest.raises(InvalidInputError, match="not an image reference"):
        compile_pipeline(pipeline, source, KfpOptions(image="not an image"))
    with pytest.raises(InvalidInputError, match="no parameter 'm'"):
        compile_pipeline(pipeline, source, KfpOptions(image=IMAGE, params={"m": 1}))
    unpinned = compile_pipeline(pipeline, source, KfpOptions(image="python:3.11"))
    assert not unpinned.pinned


def test_a_list_parameter_zipped_with_another_list_is_refused() -> None:
    @define
    def zipped(xs: list[int] = [1, 2]) -> None:  # noqa: B006 - never mutated
        add.map(x=xs, y=[3, 4])

    with pytest.raises(DefinitionError, match="a KFP loop goes over one list"):
        compile_pipeline(zipped, str(SHAPES), KfpOptions(image=IMAGE))


def test_cli_compile_and_the_package_target(tmp_path: Path) -> None:
    out = tmp_path / "fan.yaml"
    result = CliRunner().invoke(
        app,
        ["compile", f"{SHAPES}:fan", "--target", "kfp", "--image", IMAGE, "-o", str(out)],
        env={"TREADLE_HOME": str(tmp_path / "home")},
    )
    assert result.exit_code == 0, result.output
    assert "4 tasks" in result.output and "n: int" in result.output
    assert yaml.safe_load(out.read_text())["pipelineInfo"]["name"] == "fan"

    pipeline, source = find_pipeline(f"{SHAPES}:fan")
    assert source is not None
    plain = build_package(pipeline, source)
    with_yaml = build_package(pipeline, source, targets={KFP_TARGET: out.read_bytes()})
    assert with_yaml.manifest.hash == plain.manifest.hash  # derived, so not part of the version
    read = read_package(with_yaml.data)
    assert target_file(read, KFP_TARGET) == out.read_bytes()
    assert target_file(read_package(plain.data), KFP_TARGET) is None


def test_pipeline_build_target_kfp_and_submit_checks_parameters(tmp_path: Path) -> None:
    env = {"TREADLE_HOME": str(tmp_path / "home")}
    dist = tmp_path / "dist"
    build_args = ["pipeline", "build", f"{SHAPES}:fan", "--no-smoke", "--target", "kfp"]
    built = CliRunner().invoke(app, [*build_args, "--image", IMAGE, "-o", str(dist)], env=env)
    assert built.exit_code == 0, built.output
    (package,) = dist.iterdir()
    compiled = target_file(read_package(package.read_bytes()), KFP_TARGET)
    assert compiled is not None and b"treadle.cli.kfp_pod" in compiled

    refused = CliRunner().invoke(
        app, ["kfp", "submit", str(package), "--host", "http://127.0.0.1:9", "-p", "m=3"], env=env
    )
    assert isinstance(refused.exception, InvalidInputError)
    assert "no KFP parameter 'm'" in refused.exception.message
