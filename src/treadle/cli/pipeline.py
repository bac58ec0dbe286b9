"""`treadle pipeline`: build a pipeline into a versioned package (CI), test it, deploy
it to an environment's server (CD), list its versions and roll back."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from treadle.cli import common
from treadle.cli.progress import Progress
from treadle.errors import ConflictError, InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from treadle.client import Client
    from treadle.dsl import Pipeline
    from treadle.packaging import Package
    from treadle.store.records import PipelineVersionRecord

app = typer.Typer(
    help="Pipeline CI and CD: build a package, test it, deploy it to an environment, "
    "list versions, roll back.",
    no_args_is_help=True,
)

Target = Annotated[str, typer.Argument(help="A pipeline: path/to/file.py or path/to/file.py:name.")]
Env = Annotated[
    str | None,
    typer.Option(
        "--env",
        help="An environment from config.toml or TREADLE_ENV_<NAME>_URL; default: the "
        "local home (or TREADLE_URL).",
    ),
]


def _load(target: str) -> tuple[Pipeline[Any, Any], str]:
    from treadle.engine import find_pipeline

    found, source = find_pipeline(target)
    if source is None or not source.endswith(".py"):
        raise InvalidInputError(
            f"{target} is not a pipeline in a .py file",
            "build from the file that defines it: treadle pipeline build path/to/pipeline.py",
        )
    return found, source


def smoke_run(pipeline: Pipeline[Any, Any], params: dict[str, str]) -> tuple[bool, str]:
    """Run the pipeline with its smoke parameters in a home of its own, without cache.
    Returns (passed, what to say). A failed smoke run's home is kept to look into."""
    from treadle.config import load_settings
    from treadle.engine import RunOptions, run_pipeline
    from treadle.store import open_store
    from treadle.types import RunState

    home = Path(tempfile.mkdtemp(prefix="treadle-smoke-"))
    settings = load_settings({"TREADLE_HOME": str(home), "TREADLE_USER": "smoke"})
    store = open_store(settings)
    typed = pipeline.parse_params(params)
    with Progress(common.console()) as progress:
        run = run_pipeline(
            pipeline, typed, store, RunOptions(use_cache=False, on_event=progress, name="smoke")
        )
    record = run.refresh().record
    if record.state is RunState.SUCCEEDED:
        store.close()
        shutil.rmtree(home, ignore_errors=True)
        return True, f"smoke run SUCCEEDED in {common.seconds(record.duration)}"
    return False, (
        f"smoke run {record.state.value}: {record.error}\n"
        f"  its logs: TREADLE_HOME={home} treadle runs logs {record.id[:8]}"
    )


def _smoke_params(pipeline: Pipeline[Any, Any], overrides: list[str]) -> dict[str, str]:
    from treadle.cli.run import parse_assignments
    from treadle.dsl import format_param

    params = {k: format_param(v) for k, v in pipeline.smoke.items()}
    params.update(parse_assignments(overrides))
    return params


@app.command()
def build(
    target: Target,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the package to.")] = (
        Path("dist")
    ),
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="Override a smoke parameter: KEY=VALUE."),
    ] = None,
    no_smoke: Annotated[
        bool, typer.Option("--no-smoke", help="Skip the smoke run (the package says so).")
    ] = False,
    executor: Annotated[
        str | None,
        typer.Option(
            help="Where a server runs this version's steps: local, process or ray "
            "(default: the server's own choice)."
        ),
    ] = None,
    to: Annotated[
        str | None,
        typer.Option("--target", help="Also compile for a platform: kfp (needs --image)."),
    ] = None,
    image: Annotated[
        str, typer.Option(help="With --target kfp: the image the steps run in (REPO@sha256:...).")
    ] = "",
) -> None:
    """Check the pipeline, make a smoke run, write its package.

    Writes dist/NAME-VERSION.treadle. The package holds the spec, the source of the
    pipeline's folder, the locked requirements and build metadata (git commit, time).
    VERSION comes from the content: the same source builds the same version. The smoke
    run uses the parameters the pipeline declares with @pipeline(smoke={...}), in a home
    of its own. `--executor ray` makes the server run this version's runs (submitted,
    scheduled or triggered) on Ray; the smoke run stays on local threads.

    Example: treadle pipeline build examples/quickstart/pipeline.py
    """
    from treadle.engine.executors import EXECUTORS
    from treadle.packaging import build_package, write_package

    if executor is not None and executor not in EXECUTORS:
        raise InvalidInputError(
            f"--executor {executor!r} is not an executor", f"choose one of: {', '.join(EXECUTORS)}"
        )
    pipeline, source = _load(target)
    params = _smoke_params(pipeline, param or [])
    # checks the graph and types
    targets = _compiled_targets(pipeline, source, to, image)
    package = build_package(pipeline, source, smoke=params, executor=executor, targets=targets)
    console = common.console()
    console.print(
        f"pipeline [bold]{pipeline.name}[/] version [bold]{package.manifest.version}[/] "
        f"({len(package.manifest.files)} files, "
        f"{len(package.manifest.requirements)} locked requirements)"
    )
    if not no_smoke:
        passed, said = smoke_run(pipeline, params)
        console.print(("[green]" if passed else "[red]") + said + "[/]")
        if not passed:
            raise typer.Exit(1)
    path = write_package(package, out)
    console.print(f"wrote {path}")


def _compiled_targets(
    pipeline: Pipeline[Any, Any], source: str, to: str | None, image: str
) -> dict[str, bytes]:
    """`--target kfp`: the Kubeflow Pipelines YAML, compiled with the defaults."""
    if to is None:
        return {}
    from treadle.cli.compile import TARGETS, compile_kfp
    from treadle.packaging.package import KFP_TARGET

    if to not in TARGETS or not image:
        raise InvalidInputError(
            f"--target {to!r} needs one of: {', '.join(TARGETS)}, and --image",
            "e.g. --target kfp --image REPO@sha256:...",
        )
    compiled = compile_kfp(pipeline, source, image=image, params=[], env=[], source_root=".")
    return {KFP_TARGET: compiled.yaml.encode()}


def _pytest_targets(root: Path) -> list[Path]:
    found = sorted(root.glob("test_*.py")) + sorted(root.glob("*_test.py"))
    if (root / "tests").is_dir():
        found.append(root / "tests")
    return found


@app.command()
def test(
    target: Target,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="Override a smoke parameter: KEY=VALUE."),
    ] = None,
    no_smoke: Annotated[bool, typer.Option("--no-smoke", help="Skip the smoke run.")] = False,
) -> None:
    """Run the project's step tests and the smoke run.

    The step tests are what pytest finds in test_*.py, *_test.py and tests/ next to the
    pipeline. Exits 1, after a report, if anything fails.

    Steps are plain functions too: a test calls `my_step.fn(...)` and asserts on what it
    returns; a step that logs params or metrics runs inside `with treadle.start_run():`.
    """
    from rich.table import Table

    pipeline, source = _load(target)
    root = Path(source).parent
    console = common.console()
    results: list[tuple[str, bool, str, float]] = []
    targets = _pytest_targets(root)
    if targets:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *map(str, targets)],
            cwd=root,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
            capture_output=True,
            text=True,
        )
        spent = time.monotonic() - started
        lines = [ln for ln in done.stdout.splitlines() if ln.strip()]
        summary = lines[-1] if lines else done.stderr.strip()[-300:]
        if done.returncode != 0:
            console.print(done.stdout[-4000:] + done.stderr[-2000:])
        if "No module named pytest" in done.stderr:
            summary = "pytest is not installed: pip install pytest"
        results.append(("step tests", done.returncode == 0, summary, spent))
    else:
        results.append(("step tests", True, f"none found next to {Path(source).name}", 0.0))
    if not no_smoke:
        started = time.monotonic()
        passed, said = smoke_run(pipeline, _smoke_params(pipeline, param or []))
        results.append(("smoke run", passed, said, time.monotonic() - started))
    table = Table(title=f"pipeline {pipeline.name}", box=None)
    for column in ("check", "result", "detail", "time"):
        table.add_column(column)
    for name, ok, detail, spent in results:
        mark = "[green]passed[/]" if ok else "[red]FAILED[/]"
        table.add_row(name, mark, detail, common.seconds(spent))
    console.print(table)
    if not all(ok for _, ok, _, _ in results):
        raise typer.Exit(1)


def env_client(name: str) -> Client:
    from treadle.client import Client

    env = common.settings().environment(name)
    return Client(env.url, env.token, project=env.project)


def _green_in(required: str, package: Package) -> str | None:
    """The id of a successful run of this package's version in `required`, if any."""
    from treadle.types import RunState

    client = env_client(required)
    try:
        versions = client.list_pipeline_versions(package.manifest.name)
    except NotFoundError:
        return None
    for version in versions:
        if version.hash == package.manifest.hash:
            runs = client.list_runs(pipeline_version=version.id, state=RunState.SUCCEEDED, limit=20)
            # checked here too: a server that does not know the filter ignores it
            green = [r.id for r in runs if r.pipeline_version_id == version.id]
            return green[0] if green else None
    return None


@app.command()
def deploy(
    package_path: Annotated[Path, typer.Argument(help="A package: dist/NAME-VERSION.treadle.")],
    to: Annotated[str, typer.Option("--to", help="The environment to deploy to.")],
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Deploy even without a successful run in the environment this one "
            "requires; recorded in the audit log.",
        ),
    ] = False,
    pipeline: Annotated[
        str | None,
        typer.Option(
            "--pipeline", help="Refuse the package unless it was built for this pipeline."
        ),
    ] = None,
) -> None:
    """Register a package on an environment's server.

    It becomes its pipeline's current version there. An environment that requires
    another (prod requires staging by default) takes only a package with a successful
    run there, asked of that server.

    Example: treadle pipeline deploy dist/training-3f2a9c1b7d4e.treadle --to staging
    """
    from treadle.packaging import read_package

    if not package_path.is_file():
        raise NotFoundError(f"no package {package_path}", "build one: treadle pipeline build FILE")
    package = read_package(package_path.read_bytes())
    manifest = package.manifest
    if pipeline is not None and manifest.name != pipeline:
        raise InvalidInputError(
            f"{package_path} was built for pipeline {manifest.name!r}, not {pipeline!r}",
            "deploy the package of that pipeline",
        )
    named = re.fullmatch(r"(.+)-([0-9a-f]{12})\.treadle", package_path.name)
    if named and package_path.name != manifest.filename:
        raise InvalidInputError(
            f"{package_path.name} holds {manifest.filename}: the file was renamed or changed",
            "deploy the package under the name `treadle pipeline build` gave it",
        )
    env = common.settings().environment(to)
    forced = None
    if env.requires:
        green = _green_in(env.requires, package)
        if green is None and not force:
            raise ConflictError(
                f"{manifest.name} {manifest.version} has no successful run in "
                f"{env.requires}; {to} requires one",
                f"deploy it to {env.requires} and run it there first, or pass --force "
                "(recorded in the audit log)",
            )
        if green is None:
            forced = f"deployed with --force: no successful run in {env.requires}"
    deployed = env_client(to).deploy_package(package.data, forced=forced, pipeline=pipeline)
    said = "registered" if deployed.created else "already registered; made current"
    common.console().print(
        f"{manifest.name} {manifest.version} → {to} ({env.url}): {said}, version id "
        f"{deployed.version.id}"
    )
    if forced:
        common.err_console().print(f"[yellow]warning:[/] {forced}")


def _store_for(env: str | None) -> Any:
    if env is None:
        return common.store(), common.project_id()
    from treadle.client import remote_store

    client = env_client(env)
    store = remote_store(client, common.settings().replace(project=client.project))
    return store, store.projects.get_project(client.project).id


def _current(store: Any, project_id: str, name: str) -> PipelineVersionRecord:
    return store.pipelines.latest_version(project_id, name)[1]


@app.command()
def versions(name: Annotated[str, typer.Argument(help="Pipeline name.")], env: Env = None) -> None:
    """A pipeline's versions; the current one is marked.

    Oldest first. The current version is what submitted and scheduled runs execute."""
    from rich.table import Table

    from treadle.packaging import parse_source

    store, project = _store_for(env)
    found = store.pipelines.list_versions(project, name)
    current = _current(store, project, name).id
    table = Table(box=None)
    for column in ("", "version", "id", "created", "from"):
        table.add_column(column)
    for v in found:
        origin = "package" if parse_source(v.source) else "a working copy"
        table.add_row(
            "[green]●[/]" if v.id == current else "",
            v.hash[:12],
            v.id,
            common.when(v.created_at),
            origin,
        )
    common.console().print(table)


@app.command()
def rollback(
    name: Annotated[str, typer.Argument(help="Pipeline name.")],
    to_version: Annotated[
        str | None,
        typer.Option(
            "--to-version",
            help="A version (hash prefix or id); default: the one before the current.",
        ),
    ] = None,
    env: Env = None,
) -> None:
    """Make the previous version current again.

    Or the version given. Submitted and scheduled runs execute it from now on."""
    store, project = _store_for(env)
    found = store.pipelines.list_versions(project, name)
    current = _current(store, project, name)
    if to_version is None:
        ids = [v.id for v in found]
        at = ids.index(current.id)
        if at == 0:
            raise ConflictError(
                f"{name} {current.hash[:12]} is its first version; there is nothing before it",
                f"see its versions with `treadle pipeline versions {name}`",
            )
        target = found[at - 1]
    else:
        matches = [
            v for v in found if to_version in (v.id, v.hash) or v.hash.startswith(to_version)
        ]
        if len(matches) != 1:
            raise NotFoundError(
                f"{name} has {'no' if not matches else 'more than one'} version {to_version!r}",
                f"see them with `treadle pipeline versions {name}`",
            )
        target = matches[0]
    store.pipelines.set_current(project, name, target.id)
    common.console().print(f"{name}: current version {current.hash[:12]} → {target.hash[:12]}")


@app.command("run")
def run_deployed(
    name: Annotated[str, typer.Argument(help="Pipeline name.")],
    env: Env = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="A pipeline parameter as KEY=VALUE; repeat."),
    ] = None,
    experiment: Annotated[str | None, typer.Option("--experiment", "-e")] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Follow the run until it ends.")
    ] = True,
) -> None:
    """Run a pipeline's current version on a server.

    On an environment (--env) or TREADLE_URL, followed until it ends. The code that runs
    is the deployed package's, never a working copy."""
    from treadle.cli import remote_run
    from treadle.cli.run import interrupted_notice, parse_assignments, summarize

    if env is None and not common.remote():
        raise InvalidInputError(
            "`treadle pipeline run` runs a deployed version on a server",
            "name an environment with --env, or set TREADLE_URL (or --url); to run a file "
            "here, use `treadle run FILE`",
        )
    client = env_client(env) if env else common.client()
    record = client.submit_run(name, parse_assignments(param or []), experiment=experiment)
    if not wait:
        common.console().print(f"run {record.id} submitted")
        return
    spec = client.get_pipeline_version(record.pipeline_version_id or "").spec
    with Progress(common.console()) as progress, interrupted_notice(progress):
        result = remote_run.follow(record, progress, spec, client=client)
    summarize(result, progress)
