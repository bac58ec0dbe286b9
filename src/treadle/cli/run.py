"""`treadle run`: run a pipeline from a file or module."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.markup import escape

from treadle.cli import common
from treadle.cli.progress import Progress
from treadle.dsl import Pipeline
from treadle.engine import RunOptions, find_pipeline, run_pipeline
from treadle.errors import InvalidInputError
from treadle.tracking import Run
from treadle.types import RunState


def parse_assignments(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"-p {item!r} is not KEY=VALUE", "write it as -p c=0.5")
        out[key.strip()] = value
    return out


@contextmanager
def interrupted_notice(progress: Progress) -> Iterator[None]:
    """Ctrl-C: say what state the run was left in and how to finish it; exit 130."""
    try:
        yield
    except KeyboardInterrupt:
        run_id = progress.run_id[:8] or "ID"
        common.err_console().print(
            f"interrupted: run {run_id} is CANCELLED; its finished steps are kept and "
            f"`treadle runs resume {run_id}` finishes it"
        )
        raise typer.Exit(130) from None


def summarize(run: Run, progress: Progress, target: str | None = None) -> None:
    """The closing lines of a run (or a resume), and the exit code they imply."""
    console = common.console()
    record = run.refresh().record
    counts = progress.counts
    ran = counts.get("step_finished", 0)
    cached = counts.get("step_cached", 0) + counts.get("step_reused", 0)
    parts = [f"{ran} ran", f"{cached} cached"] + (
        [f"{counts['step_failed']} failed"] if counts.get("step_failed") else []
    )
    state = record.state.value
    console.print(
        f"run [bold]{record.id}[/] {common.styled_state(state)} in "
        f"{common.seconds(record.duration)} ({', '.join(parts)})"
    )
    if progress.total and cached == progress.total:
        console.print("[cyan]every step was answered from the cache[/]")
    metrics = run.metrics
    if metrics:
        console.print("metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
    promotion = run.params.get("promotion")
    if promotion:  # what a registering step says became of its model
        console.print(f"promotion: {escape(promotion)}")
    if record.state is RunState.FAILED:
        console.print(f"[red]{record.error}[/]")
        if target is None:
            after = f"`treadle runs resume {record.id[:8]}` re-runs only what did not finish"
        else:  # the server resumes the code it was sent: a fix goes up as a new run
            after = (
                f"`treadle run {target}` again sends the fixed code (finished steps come "
                f"from the cache); `treadle runs resume {record.id[:8]}` retries as it was"
            )
        console.print(
            f"see the logs with `treadle runs logs {record.id[:8]}`; after a fix, {after}"
        )
        raise typer.Exit(1)


def run(
    target: Annotated[
        str,
        typer.Argument(help="A pipeline: path/to/file.py, file.py:name, or package.module:name."),
    ],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="A pipeline parameter as KEY=VALUE; repeat for more."),
    ] = None,
    experiment: Annotated[
        str | None,
        typer.Option(
            "--experiment", "-e", help="Experiment to file the run under (created if new)."
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="A name for the run.")] = None,
    executor: Annotated[
        str | None,
        typer.Option(help="Where steps run: local (threads, default), process, or ray."),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="With --executor ray: the Ray cluster (`auto`, HOST:PORT, ray://HOST:PORT); "
            "default RAY_ADDRESS, else a local Ray is started."
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="How many steps may run at once.")
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Run every step even if its result is cached.")
    ] = False,
) -> None:
    """Run a pipeline, showing each step as it goes, and print the run id and a summary.

    With TREADLE_URL (or --url) set, the pipeline's folder is sent to that server as a
    package and the run executes there; this command follows it until it ends.
    Steps whose code, inputs and parameters are unchanged are answered from the cache.
    A failed run keeps its finished steps: fix the cause and `treadle runs resume ID`.

    Example: treadle run examples/quickstart/pipeline.py -p c=0.5 -e demo
    """
    pipeline, source = find_pipeline(target)
    raw = parse_assignments(param or [])
    params = pipeline.parse_params(raw)
    if common.remote():
        if ray_address:
            raise InvalidInputError(
                "--ray-address applies to runs on this machine",
                "the server runs Ray steps on the cluster its own RAY_ADDRESS names",
            )
        run_on_server(
            target, pipeline, source, raw, experiment, name, executor, workers, not no_cache
        )
        return
    store = common.local_store()
    if ray_address:
        store = dataclasses.replace(store, settings=store.settings.replace(ray_address=ray_address))
    with Progress(common.console()) as progress, interrupted_notice(progress):
        result = run_pipeline(
            pipeline,
            params,
            store,
            RunOptions(
                experiment=experiment,
                name=name,
                executor=executor,
                max_workers=workers,
                use_cache=not no_cache,
                on_event=progress,
            ),
            source_file=source,
        )
    summarize(result, progress)


def run_on_server(
    target: str,
    pipeline: Pipeline[Any, Any],
    source: str | None,
    params: dict[str, str],
    experiment: str | None,
    name: str | None,
    executor: str | None,
    workers: int | None,
    use_cache: bool,
) -> None:
    from treadle.cli import remote_run

    if source is None:
        raise InvalidInputError(
            f"pipeline {pipeline.name!r} has no source file to send to the server",
            "run it from a .py file: treadle run path/to/pipeline.py",
        )
    record = remote_run.submit(
        pipeline,
        source,
        params,
        experiment=experiment,
        name=name,
        executor=executor,
        workers=workers,
        use_cache=use_cache,
    )
    with Progress(common.console()) as progress, interrupted_notice(progress):
        try:
            version = common.client().get_pipeline_version(record.pipeline_version_id or "")
        except KeyboardInterrupt:
            common.client().cancel_run(record.id)
            raise
        result = remote_run.follow(record, progress, version.spec)
    summarize(result, progress, target)
