"""`treadle kfp`: run compiled pipelines on Kubeflow Pipelines."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from treadle.cli import common
from treadle.errors import InvalidInputError

app = typer.Typer(help="Kubeflow Pipelines: submit a compiled pipeline.", no_args_is_help=True)


def pipeline_yaml(path: Path, folder: Path) -> Path:
    """The KFP YAML itself, or the one inside a package built with --target kfp."""
    if path.suffix != ".treadle":
        return path
    from treadle.packaging import read_package
    from treadle.packaging.package import KFP_TARGET, target_file

    package = read_package(path.read_bytes())
    data = target_file(package, KFP_TARGET)
    if data is None:
        raise InvalidInputError(
            f"{path} holds no Kubeflow pipeline",
            "build it with `treadle pipeline build FILE --target kfp --image ...`",
        )
    out = folder / f"{package.manifest.name}.yaml"
    out.write_bytes(data)
    return out


@app.command()
def submit(
    package: Annotated[
        Path, typer.Argument(help="A package built with --target kfp, or a compiled YAML.")
    ],
    host: Annotated[str, typer.Option("--host", help="The Kubeflow Pipelines API address.")],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="A pipeline parameter for this run: KEY=VALUE."),
    ] = None,
    experiment: Annotated[
        str | None, typer.Option("--experiment", help="The KFP experiment to file it under.")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="The run's name.")] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", help="The Kubeflow profile namespace.")
    ] = None,
) -> None:
    """Start a run of a compiled pipeline on Kubeflow Pipelines.

    The pipeline is uploaded with kfp.Client; -p gives its KFP parameters for this run.

    Example: treadle kfp submit dist/training-1a2b3c4d5e6f.treadle --host http://127.0.0.1:8888
    """
    import yaml

    from treadle.cli.run import parse_assignments
    from treadle.integrations.kfp import submit as submit_run

    if not package.is_file():
        raise InvalidInputError(f"no file {package}", "give a .treadle package or a .yaml")
    with tempfile.TemporaryDirectory(prefix="treadle-kfp-") as tmp:
        found = pipeline_yaml(package, Path(tmp))
        declared = (yaml.safe_load(found.read_text()) or {}).get("root", {})
        known = declared.get("inputDefinitions", {}).get("parameters", {})
        params: dict[str, object] = {}
        for key, text in parse_assignments(param or []).items():
            if key not in known:
                raise InvalidInputError(
                    f"the pipeline has no KFP parameter {key!r}",
                    f"its parameters are: {', '.join(known) or '(none)'}",
                )
            params[key] = yaml.safe_load(text) if known[key]["parameterType"] != "STRING" else text
        run = submit_run(
            found, host, params=params, experiment=experiment, run_name=name, namespace=namespace
        )
    common.console().print(f"started KFP run {run.run_id}: {run.url}")
