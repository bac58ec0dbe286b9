"""`treadle compile`: a pipeline as another platform's pipeline definition."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from treadle.cli import common
from treadle.errors import InvalidInputError

if TYPE_CHECKING:
    from treadle.dsl import Pipeline
    from treadle.integrations.kfp import Compiled

TARGETS = ("kfp",)

Image = Annotated[
    str,
    typer.Option(
        "--image",
        help="The image every step runs in: treadle and the pipeline's folder installed "
        "(pin it by digest: REPO@sha256:...).",
    ),
]
SourceRoot = Annotated[
    str,
    typer.Option(
        "--source-root",
        help="Where the pipeline's folder sits in the image (default: its working directory).",
    ),
]
Params = Annotated[
    list[str] | None,
    typer.Option("--param", "-p", help="Compile-time value of a parameter: KEY=VALUE."),
]
Env = Annotated[
    list[str] | None,
    typer.Option(
        "--env",
        "-e",
        help="An environment variable for every pod: KEY=VALUE (e.g. TREADLE_DB_URL=...).",
    ),
]


def compile_kfp(
    pipeline: Pipeline[Any, Any],
    source: str,
    *,
    image: str,
    params: list[str],
    env: list[str],
    source_root: str,
    exit_task: bool = True,
) -> Compiled:
    """Compile for Kubeflow Pipelines and say what stayed a parameter and what was fixed."""
    from treadle.cli.run import parse_assignments
    from treadle.integrations.kfp import KfpOptions, compile_pipeline

    options = KfpOptions(
        image=image,
        params=pipeline.parse_params(parse_assignments(params)),
        source_root=source_root,
        env=parse_assignments(env),
        exit_task=exit_task,
    )
    compiled = compile_pipeline(pipeline, source, options)
    console = common.err_console()
    if not compiled.pinned:
        console.print(
            f"[yellow]--image {image} is not pinned by digest: the pods may run another "
            "image than the one you tested (use REPO@sha256:...)[/]"
        )
    for name, why in compiled.fixed.items():
        console.print(f"parameter {name} is fixed at compile time: {why}")
    return compiled


def compile_command(
    pipeline_file: Annotated[
        str,
        typer.Argument(metavar="PIPELINE", help="A pipeline: path/to/file.py or file.py:name."),
    ],
    to: Annotated[str, typer.Option("--target", "-t", help="The platform: kfp.")] = "kfp",
    out: Annotated[Path, typer.Option("--out", "-o", help="The file to write.")] = Path(
        "pipeline.yaml"
    ),
    image: Image = "",
    param: Params = None,
    env: Env = None,
    source_root: SourceRoot = ".",
    exit_task: Annotated[
        bool,
        typer.Option(
            "--record-exit/--no-record-exit",
            help="Add an exit task that records in treadle how the run ended.",
        ),
    ] = True,
) -> None:
    """Compile a pipeline to a Kubeflow Pipelines v2 YAML.

    Each step becomes a container component running `python -m treadle.cli.kfp_pod`
    in --image; parameters that reach steps as they are stay KFP pipeline parameters
    (with their types and defaults), those that shape the graph are fixed at the value
    given with -p (or their default).

    Example: treadle compile examples/quickstart/pipeline.py --target kfp \\
      --image registry.example.com/quickstart@sha256:... -o quickstart.yaml
    """
    from treadle.engine import find_pipeline

    if to not in TARGETS:
        raise InvalidInputError(f"--target {to!r} is not one of: {', '.join(TARGETS)}")
    if not image:
        raise InvalidInputError(
            "--image is required", "name the image the steps run in, e.g. --image REPO@sha256:..."
        )
    pipeline, source = find_pipeline(pipeline_file)
    if source is None:
        raise InvalidInputError(f"{pipeline_file} is not a pipeline in a .py file")
    started = time.perf_counter()
    compiled = compile_kfp(
        pipeline,
        source,
        image=image,
        params=param or [],
        env=env or [],
        source_root=source_root,
        exit_task=exit_task,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(compiled.yaml)
    runtime = ", ".join(f"{k}: {v}" for k, v in compiled.runtime.items()) or "none"
    common.console().print(
        f"wrote {out}: {compiled.tasks} tasks, parameters {runtime} "
        f"({common.seconds(time.perf_counter() - started)})"
    )
