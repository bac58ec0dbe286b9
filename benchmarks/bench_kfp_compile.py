"""Compiling a large pipeline to a Kubeflow Pipelines v2 YAML.

Target: a 2,000-step pipeline compiles in under 10 s. The pipeline is layered: every
step reads the two steps before it and one pipeline parameter, so the compiler sees
real artifact wiring, probes the parameter (one more trace) and builds 2,000 KFP
components. Each compile is checked by reading the YAML back into KFP's PipelineSpec
message and counting the tasks and their dependencies.

Prints one JSON object per line: the wall time (and the CPU time, which other work
on a shared machine does not inflate) of each stage (trace and probe, building and
compiling with the kfp SDK) and the YAML's size, at several widths, so that the size
at which Kubeflow's own limits bite can be read off (see docs/kubeflow.md).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any

import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from treadle.dsl import pipeline, step
from treadle.integrations.kfp import KfpOptions, compile_pipeline, probe

TARGET_STEPS = 2000
TARGET_S = 10.0
WIDTHS = (250, 1000, 2000)
REPEATS = 3
IMAGE = "registry.example.com/treadle-steps@sha256:" + "e" * 64
ETCD_LIMIT_BYTES = 1_572_864
"""etcd's default --max-request-bytes: the largest object (an Argo Workflow) it stores."""


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


@step
def seed(scale: float) -> list[float]:
    return [scale]


@step
def mix(a: list[float], b: list[float], scale: float) -> list[float]:
    return [x * scale for x in a + b]


def layered(steps: int) -> Any:
    @pipeline(name=f"layered-{steps}")
    def body(scale: float = 1.0) -> None:
        before = seed(scale)
        last = seed(scale)
        for _ in range(steps - 2):
            before, last = last, mix(before, last, scale)

    return body


def check(text: str, steps: int) -> None:
    spec = json_format.ParseDict(yaml.safe_load(text), pipeline_spec_pb2.PipelineSpec())
    tasks = spec.components["comp-exit-handler-1"].dag.tasks
    assert len(tasks) == steps, (len(tasks), steps)
    wired = sum(len(t.dependent_tasks) for t in tasks.values())
    assert wired == 2 * (steps - 2), wired
    assert spec.root.input_definitions.parameters["scale"].parameter_type == (
        pipeline_spec_pb2.ParameterType.NUMBER_DOUBLE
    )


def measure(steps: int) -> dict[str, Any]:
    flow = layered(steps)
    traces, totals, cpu, size = [], [], [], 0
    for _ in range(REPEATS):
        started = time.perf_counter()
        probe(flow, {})
        traces.append(time.perf_counter() - started)
        started, cpu_started = time.perf_counter(), time.process_time()
        compiled = compile_pipeline(flow, __file__, KfpOptions(image=IMAGE))
        totals.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
        size = len(compiled.yaml.encode())
        check(compiled.yaml, steps)
    total = statistics.median(totals)
    return {
        "steps": steps,
        "median_s": round(total, 3),
        "max_s": round(max(totals), 3),
        "cpu_s": round(statistics.median(cpu), 3),
        "trace_and_probe_s": round(statistics.median(traces), 3),
        "kfp_build_and_compile_s": round(total - statistics.median(traces), 3),
        "yaml_bytes": size,
        "yaml_bytes_per_step": round(size / steps),
    }


def main() -> int:
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    per_step = 0
    for steps in WIDTHS:
        figures = measure(steps)
        per_step = figures["yaml_bytes_per_step"]
        at_target = steps == TARGET_STEPS
        emit(
            benchmark=f"kfp_compile_{steps}_steps",
            **figures,
            target_s=TARGET_S if at_target else None,
            meets_target=figures["median_s"] <= TARGET_S if at_target else None,
            runs=REPEATS,
        )
    emit(
        benchmark="kfp_compile_size_limit",
        etcd_limit_bytes=ETCD_LIMIT_BYTES,
        yaml_bytes_per_step=per_step,
        steps_whose_yaml_fits=ETCD_LIMIT_BYTES // per_step,
        target_s=None,
        meets_target=None,
        runs=1,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
