"""A treadle pipeline as a Kubeflow Pipelines v2 pipeline, built with the kfp SDK.

Every node becomes one container component that runs `python -m treadle.cli.kfp_pod`
(`entry.POD_MODULE`) in the image given. Its inputs and outputs are typed KFP artifacts
(Dataset, Model, Metrics, or Artifact when the annotation says nothing more), so KFP
moves the data and shows the lineage; constants travel in the task's own description,
and parameters that stay parameters on KFP (see `params.py`) are KFP pipeline
parameters.

A fan-out (`step.map(...)`) is one node with as many runs as its list has items, a
number known only when the list is (an upstream step's output is known at run time).
It becomes a `dsl.ParallelFor` around one task, so the KFP graph has the shape of the
treadle graph and the YAML does not grow with the width:

* over an upstream step's list output: that step also writes the item numbers
  (`treadle_items_<output>`), the loop goes over them, and each run picks its item
  from the list artifact;
* over a constant list: the loop goes over the item numbers, fixed in the YAML;
* over a list pipeline parameter: the loop goes over the parameter's items.

A step that reads the fanned-out outputs gets them as `dsl.Collected`, in item order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import inspect
import math
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from treadle.dsl import Node, Pipeline, Step
from treadle.dsl.graph import Collect, Literal, Ref
from treadle.dsl.typecheck import split_annotated
from treadle.engine import entry
from treadle.errors import DefinitionError, InvalidInputError
from treadle.integrations.kfp.params import Probed, probe
from treadle.types import ArtifactKind

if TYPE_CHECKING:
    from kfp.dsl import PipelineTask

DIGEST = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")
IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*(@sha256:[0-9a-f]{64})?$")
DATASET_MODULES = ("pandas", "numpy", "pyarrow", "polars")
MODEL_MODULES = ("sklearn", "xgboost", "lightgbm", "torch", "onnx")


@dataclasses.dataclass(frozen=True)
class KfpOptions:
    """How to compile: the image every step runs in (a digest pins it), compile-time
    parameter values, where the pipeline's source sits in the image, environment
    variables for every pod, and whether an exit task records how the run ended."""

    image: str
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    source_root: str = "."
    """The folder in the image holding the pipeline's folder's files (default: the
    image's working directory)."""
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    exit_task: bool = True
    python: str = "python"
    accelerator: str = "nvidia.com/gpu"


@dataclasses.dataclass(frozen=True)
class Compiled:
    yaml: str
    name: str
    tasks: int
    runtime: dict[str, str]
    """Pipeline parameters on KFP, with their type."""
    fixed: dict[str, str]
    """Parameters fixed at compile time, with the reason."""
    pinned: bool
    """Whether the image is pinned by digest."""


def check_image(image: str) -> bool:
    """Refuse an image reference that is not one; answer whether a digest pins it."""
    if not image or not IMAGE.match(image):
        raise InvalidInputError(
            f"--image {image!r} is not an image reference",
            "e.g. --image registry.example.com/churn@sha256:<64 hex digits>",
        )
    return bool(DIGEST.match(image))


def kfp_name(name: str) -> str:
    """A name KFP accepts for a pipeline: lower case, digits and dashes."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return (cleaned or "pipeline")[:128]


def _artifact_class(annotation: Any) -> Any:
    from kfp import dsl

    base, kind = split_annotated(annotation)
    by_kind = {
        ArtifactKind.DATASET: dsl.Dataset,
        ArtifactKind.MODEL: dsl.Model,
        ArtifactKind.METRICS: dsl.Metrics,
        ArtifactKind.REPORT: dsl.Markdown,
    }
    if kind in by_kind:
        return by_kind[kind]
    module = getattr(base, "__module__", "") or ""
    if module.startswith(DATASET_MODULES):
        return dsl.Dataset
    if module.startswith(MODEL_MODULES):
        return dsl.Model
    return dsl.Artifact


def _source_of(step: Step[Any, Any], root: Path) -> str | None:
    """The step's file relative to the pipeline's folder, as the image holds it."""
    import sys

    module = sys.modules.get(step.fn.__module__)
    path = getattr(module, "__file__", None)
    if not path:
        return None
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        return None  # outside the pipeline's folder: imported by name in the image


def _portable_ref(ref: str, source: str | None) -> str:
    """A step loaded from a file lives in a module named after the file's absolute path
    here; in the image it is loaded from `source` under a name made from that relative
    path, so the YAML is the same whichever folder it was compiled in."""
    module, _, qualname = ref.partition(":")
    if not (module.startswith("treadle_user_") and source):
        return ref
    digest = hashlib.sha256(source.encode()).hexdigest()[:10]
    return f"treadle_user_{Path(source).stem}_{digest}:{qualname}"


@dataclasses.dataclass
class _Interface:
    """One node's component: KFP inputs and outputs, and what the entry is told."""

    inputs: dict[str, Any] = dataclasses.field(default_factory=dict)
    outputs: dict[str, Any] = dataclasses.field(default_factory=dict)
    arguments: dict[str, Any] = dataclasses.field(default_factory=dict)
    layout: dict[str, Any] = dataclasses.field(default_factory=dict)


class _Builder:
    def __init__(
        self, pipeline: Pipeline[Any, Any], probed: Probed, options: KfpOptions, root: Path
    ) -> None:
        self.pipeline = pipeline
        self.probed = probed
        self.options = options
        self.root = root
        self.graph = probed.traced.graph
        self.steps = probed.traced.steps
        # (node, output) pairs some fan-out iterates over: their producer writes item numbers
        self.iterated: set[tuple[str, str]] = set()
        for node in self.graph:
            for name in node.mapped:
                binding = node.inputs[name]
                if isinstance(binding, Ref):
                    self.iterated.add((binding.node, binding.output))

    # -- types ----------------------------------------------------------------------

    def output_class(self, node: str, output: str) -> Any:
        step = self.steps[node]
        annotation = next(o.annotation for o in step.outputs if o.name == output)
        return _artifact_class(annotation)

    # -- one node ---------------------------------------------------------------------

    def interface(self, node: Node, tasks: Mapping[str, PipelineTask], params: Any) -> _Interface:
        from kfp import dsl

        spec = _Interface()
        for name, binding in node.inputs.items():
            param = self.probed.bindings.get((node.name, name))
            mapped = name in node.mapped
            if param is not None and mapped:
                spec.layout[name] = {"item": entry.ITEM_INPUT, "of": f"param_{param}"}
                spec.inputs[f"param_{param}"] = list
                spec.arguments[f"param_{param}"] = params[param]
            elif param is not None:
                spec.layout[name] = {"param": name, "pipeline_param": param}
                spec.inputs[name] = self.probed.runtime[param]
                spec.arguments[name] = params[param]
            elif isinstance(binding, Literal):
                spec.layout[name] = {"value": binding.value, "mapped": mapped}
            elif isinstance(binding, Ref):
                cls = self.output_class(binding.node, binding.output)
                producer = tasks[binding.node]
                if self.graph.nodes[binding.node].is_map:
                    spec.layout[name] = {"artifacts": name}
                    spec.inputs[name] = dsl.Input[list[cls]]  # type: ignore[valid-type]
                    spec.arguments[name] = dsl.Collected(producer.outputs[binding.output])
                else:
                    spec.layout[name] = {"artifact": name, "mapped": mapped}
                    spec.inputs[name] = dsl.Input[cls]
                    spec.arguments[name] = producer.outputs[binding.output]
            elif isinstance(binding, Collect):
                items: list[dict[str, Any]] = []
                for i, item in enumerate(binding.items):
                    if isinstance(item, Ref):
                        key = f"{name}_{i}"
                        items.append({"artifact": key})
                        spec.inputs[key] = dsl.Input[self.output_class(item.node, item.output)]
                        spec.arguments[key] = tasks[item.node].outputs[item.output]
                    else:
                        items.append({"value": item.value})
                spec.layout[name] = {"collect": items}
        for output in self.steps[node.name].outputs:
            key = output.name if output.name not in spec.inputs else f"{output.name}_out"
            spec.outputs[key] = dsl.Output[_artifact_class(output.annotation)]
            if (node.name, output.name) in self.iterated:
                spec.outputs[entry.ITEMS_PREFIX + output.name] = dsl.OutputPath(list)
        return spec

    def task_json(self, node: Node, spec: _Interface) -> dict[str, Any]:
        step = self.steps[node.name]
        kfp_outputs = {
            o.name: (o.name if o.name in spec.outputs else f"{o.name}_out") for o in step.outputs
        }
        source = _source_of(step, self.root)
        return {
            "pipeline": self.pipeline.name,
            "node": node.name,
            "step": node.step,
            "ref": _portable_ref(node.ref, source),
            "source": source,
            "root": self.options.source_root,
            "outputs": [[o.name, o.kind.value if o.kind else None] for o in step.outputs],
            "kfp_outputs": {k: v for k, v in kfp_outputs.items() if k != v},
            "inputs": spec.layout,
            "mapped": list(node.mapped),
            "items": [o for (n, o) in sorted(self.iterated) if n == node.name],
            "allow_pickle": bool(node.options.get("allow_pickle")),
            "timeout": node.options.get("timeout"),
        }

    def component(
        self, name: str, inputs: Mapping[str, Any], outputs: Mapping[str, Any], argv: list[str]
    ) -> Any:
        from kfp import dsl

        image, python = self.options.image, self.options.python

        def container(*_: Any, **__: Any) -> Any:
            return dsl.ContainerSpec(image=image, command=[python, *argv[:2]], args=argv[2:])

        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        container.__name__ = name
        container.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter(k, kind, annotation=v) for k, v in {**inputs, **outputs}.items()]
        )
        return dsl.container_component(container)

    def add_node(self, node: Node, tasks: dict[str, PipelineTask], params: Any) -> None:
        from kfp import dsl

        spec = self.interface(node, tasks, params)
        loop_items = self.loop_items(node, tasks, params)
        loop_key = entry.ITEM_INPUT if self.loops_over_param(node) else entry.INDEX_INPUT
        if loop_items is not None:
            spec.inputs[loop_key] = self.item_type(node) if loop_key == entry.ITEM_INPUT else int
        argv = entry.command(
            self.task_json(node, spec),
            dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            dsl.PIPELINE_TASK_EXECUTOR_INPUT_PLACEHOLDER,
        )
        component = self.component(node.name, spec.inputs, spec.outputs, argv)
        if loop_items is None:
            task = component(**spec.arguments)
        else:
            with dsl.ParallelFor(loop_items) as item:
                task = component(**spec.arguments, **{loop_key: item})
        self.configure(task, node)
        tasks[node.name] = task

    def item_type(self, node: Node) -> type:
        """The type of one item of the list parameter a fan-out loops over."""
        step = self.steps[node.name]
        item = step.input_types[node.mapped[0]]
        base, _ = split_annotated(item)
        return base if base in (int, float, str, bool, list, dict) else str

    def loops_over_param(self, node: Node) -> bool:
        return any((node.name, name) in self.probed.bindings for name in node.mapped)

    def loop_items(self, node: Node, tasks: Mapping[str, PipelineTask], params: Any) -> Any:
        if not node.is_map:
            return None
        if self.loops_over_param(node):
            if len(node.mapped) > 1:
                raise DefinitionError(
                    f"step {node.name!r} maps over the list parameter "
                    f"{self.probed.bindings[(node.name, node.mapped[0])]!r} together with other "
                    "lists; a KFP loop goes over one list",
                    "map over the parameter alone, or fix it at compile time with -p",
                )
            return params[self.probed.bindings[(node.name, node.mapped[0])]]
        for name in node.mapped:
            binding = node.inputs[name]
            if isinstance(binding, Ref):
                return tasks[binding.node].outputs[entry.ITEMS_PREFIX + binding.output]
        first = node.inputs[node.mapped[0]]
        assert isinstance(first, Literal)
        return list(range(len(first.value)))

    def configure(self, task: PipelineTask, node: Node) -> None:
        options = node.options
        task.set_display_name(node.name)
        task.set_caching_options(bool(options.get("cache", True)))
        retries = int(options.get("retries") or 0)
        if retries:
            task.set_retry(
                num_retries=retries,
                backoff_duration=f"{math.ceil(float(options.get('retry_delay', 1.0)))}s",
                backoff_factor=float(options.get("retry_backoff", 2.0)),
            )
        resources = dict(options.get("resources") or {})
        try:
            if resources.get("cpu"):
                cpu = f"{float(resources['cpu']):g}"
                task.set_cpu_request(cpu).set_cpu_limit(cpu)
            if resources.get("memory"):
                memory = str(resources["memory"])
                task.set_memory_request(memory).set_memory_limit(memory)
        except ValueError as exc:
            raise DefinitionError(
                f"step {node.name!r} resources {resources}: {exc}",
                "give memory as Kubernetes writes it, e.g. memory='2Gi'",
            ) from None
        gpu = resources.get("gpu")
        if gpu:
            if float(gpu) != int(gpu):
                raise DefinitionError(
                    f"step {node.name!r} asks for {gpu} GPUs; Kubernetes gives whole GPUs",
                    "ask for a whole number, e.g. resources={'gpu': 1}",
                )
            task.set_accelerator_type(self.options.accelerator).set_accelerator_limit(int(gpu))
        for key, value in self.options.env.items():
            task.set_env_variable(key, value)

    # -- the pipeline -----------------------------------------------------------------

    def exit_component(self) -> Any:
        from kfp import dsl

        argv = [
            "-m",
            entry.POD_MODULE,
            "--finish",
            "--executor-input",
            dsl.PIPELINE_TASK_EXECUTOR_INPUT_PLACEHOLDER,
            "--job",
            dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            "--job-name",
            dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            "--pipeline",
            self.pipeline.name,
        ]
        return self.component(
            "treadle_finish_run", {entry.STATUS_INPUT: dsl.PipelineTaskFinalStatus}, {}, argv
        )

    def body(self) -> Callable[..., None]:
        from kfp import dsl

        names = list(self.probed.runtime)

        def body(*args: Any) -> None:
            # KFP calls the body with one channel per pipeline parameter, in order
            params = dict(zip(names, args, strict=True))
            tasks: dict[str, PipelineTask] = {}
            if not self.options.exit_task:
                for node in self.graph:
                    self.add_node(node, tasks, params)
                return
            finish = self.exit_component()()
            finish.set_display_name("record the run in treadle")
            finish.set_caching_options(False)
            for key, value in self.options.env.items():
                finish.set_env_variable(key, value)
            with dsl.ExitHandler(finish, name="treadle-run"):
                for node in self.graph:
                    self.add_node(node, tasks, params)

        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        body.__name__ = kfp_name(self.pipeline.name).replace("-", "_")
        body.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [
                inspect.Parameter(name, kind, annotation=tp, default=self.probed.values[name])
                for name, tp in self.probed.runtime.items()
            ]
        )
        return body

    def description(self) -> str:
        lines = [f"treadle pipeline {self.pipeline.name}."]
        if self.probed.fixed:
            fixed = ", ".join(
                f"{k}={self.probed.values[k]!r} ({why})" for k, why in self.probed.fixed.items()
            )
            lines.append(f"Fixed at compile time: {fixed}.")
        return " ".join(lines)


@contextlib.contextmanager
def _task_names_memoized() -> Iterator[None]:
    """KFP's compiler sanitizes the name of every task of a DAG once for each task of that
    DAG: 4 million calls, most of the compile time, for 2,000 steps. The function is pure,
    so while a pipeline compiles it answers from a cache; afterwards it is put back."""
    from kfp.dsl import utils

    original = getattr(utils, "sanitize_task_name", None)
    if original is None:
        yield
        return
    utils.sanitize_task_name = functools.lru_cache(maxsize=None)(original)
    try:
        yield
    finally:
        utils.sanitize_task_name = original


def _pipeline_yaml(kfp_pipeline: Any) -> str:
    """The pipeline's YAML as `kfp.compiler.Compiler` writes it (its header comments, the
    PipelineSpec and any platform spec as YAML documents), through libyaml when there
    is one: the SDK's pure-Python YAML writer takes most of the time on large graphs."""
    import yaml
    from google.protobuf import json_format
    from kfp.compiler import pipeline_spec_builder

    spec = json_format.MessageToDict(kfp_pipeline.pipeline_spec)
    documents = [spec]
    if kfp_pipeline.platform_spec.platforms:
        documents.append(json_format.MessageToDict(kfp_pipeline.platform_spec))
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    header = pipeline_spec_builder.extract_comments_from_pipeline_spec(
        spec, kfp_pipeline.description
    )
    return header + yaml.dump_all(documents, Dumper=dumper, sort_keys=True)


def compile_pipeline(
    pipeline: Pipeline[Any, Any], source_file: str | Path, options: KfpOptions
) -> Compiled:
    """The KFP v2 pipeline YAML of `pipeline` (defined in `source_file`)."""
    try:
        from kfp import dsl
    except ImportError as exc:
        raise InvalidInputError(
            f"compiling for Kubeflow Pipelines needs the kfp SDK: {exc}",
            "pip install 'treadle[kfp]'",
        ) from None
    pinned = check_image(options.image)
    probed = probe(pipeline, options.params)
    builder = _Builder(pipeline, probed, options, Path(source_file).resolve().parent)
    try:
        # the SDK builds the PipelineSpec message here, checking types and wiring
        with _task_names_memoized():
            kfp_pipeline = dsl.pipeline(
                builder.body(), name=kfp_name(pipeline.name), description=builder.description()
            )
    except (ValueError, TypeError) as exc:
        raise DefinitionError(
            f"Kubeflow Pipelines refuses pipeline {pipeline.name!r}: {exc}",
            "see docs/kubeflow.md for what maps to KFP",
        ) from None
    return Compiled(
        yaml=_pipeline_yaml(kfp_pipeline),
        name=kfp_name(pipeline.name),
        tasks=len(probed.traced.graph.nodes) + (1 if options.exit_task else 0),
        runtime={k: v.__name__ for k, v in probed.runtime.items()},
        fixed=dict(probed.fixed),
        pinned=pinned,
    )
