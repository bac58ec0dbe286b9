"""`treadle runs`: list, show, logs, compare and resume runs."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from treadle.cli import common
from treadle.cli.progress import Progress
from treadle.cli.run import interrupted_notice, summarize
from treadle.engine import RunOptions, resume_run
from treadle.errors import InvalidInputError, NotFoundError
from treadle.store.records import RunRecord
from treadle.tracking.run import latest_attempts
from treadle.types import RunState

app = typer.Typer(help="Inspect and resume runs.", no_args_is_help=True)


@app.command("list")
def list_runs(
    experiment: Annotated[
        str | None, typer.Option("--experiment", "-e", help="Only this experiment.")
    ] = None,
    state: Annotated[str | None, typer.Option(help="Only runs in this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many, newest first.")] = 20,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the short ids.")] = False,
) -> None:
    """List runs, newest first."""
    from rich.table import Table

    store, project = common.store(), common.project_id()
    experiment_id = store.projects.find_experiment(project, experiment).id if experiment else None
    try:
        state_enum = RunState(state.upper()) if state else None
    except ValueError:
        raise InvalidInputError(
            f"unknown state {state!r}", f"use one of {', '.join(s.value for s in RunState)}"
        ) from None
    runs = store.runs.list_runs(project, experiment_id=experiment_id, state=state_enum, limit=limit)
    if quiet:
        for r in runs:
            typer.echo(common.short(r.id))
        return
    names = {e.experiment.id: e.experiment.name for e in store.projects.list_experiments(project)}
    table = Table("id", "name", "experiment", "state", "started", "duration")
    for r in runs:
        table.add_row(
            common.short(r.id),
            r.name,
            names.get(r.experiment_id, "?"),
            common.styled_state(r.state.value),
            common.when(r.started_at),
            common.seconds(r.duration),
        )
    common.console().print(table if runs else "no runs yet: start one with `treadle run FILE`")


@app.command()
def show(run_id: Annotated[str, typer.Argument(help="Run id or a unique prefix.")]) -> None:
    """Show a run: its state, params, metrics, steps and their artifacts."""
    from rich.table import Table

    store = common.store()
    run = store.runs.get_run(run_id, common.project_id())
    console = common.console()
    experiment = store.projects.get_experiment(run.experiment_id)
    console.print(f"[bold]run {run.id}[/]  {run.name}")
    console.print(
        f"state      {common.styled_state(run.state.value)}"
        + (f" (attempt {run.attempt})" if run.attempt > 1 else "")
    )
    console.print(f"experiment {experiment.name}")
    if run.pipeline_version_id:
        pipeline, version = store.pipelines.get_version(run.pipeline_version_id)
        console.print(f"pipeline   {pipeline.name} @ {version.hash[:12]}")
    console.print(
        f"started    {common.when(run.started_at)}   "
        f"duration {common.seconds(run.duration)}   by {run.created_by}"
    )
    console.print(f"why        {escape(_why(run))}")
    params = store.tracking.get_params(run.id)
    if params:
        console.print("params     " + ", ".join(f"{k}={v}" for k, v in params.items()))
    history: dict[str, list[float]] = {}
    for m in store.tracking.metric_history(run.id):
        history.setdefault(m.key, []).append(m.value)
    if history:
        console.print("metrics    " + ", ".join(f"{k}={v[-1]:.6g}" for k, v in history.items()))
    for key, values in history.items():
        line = common.sparkline(values)
        if line:
            console.print(
                f"  {key:<9} [cyan]{line}[/] ({len(values)} values, "
                f"min {min(values):.4g}, max {max(values):.4g})"
            )
    if run.error:
        console.print(f"[red]error      {run.error.strip().splitlines()[-1]}[/]")
    outputs: dict[str, list[str]] = {}
    for step_run, name, art in store.artifacts.run_artifacts(run.id):
        outputs.setdefault(step_run.id, []).append(f"{name}={common.short(art.id)} ({art.kind})")
    table = Table("step", "state", "attempts", "duration", "outputs", title="steps")
    steps = store.runs.list_steps(run.id)
    latest = latest_attempts(steps)
    for node, s in latest.items():
        state = s.state.value + (f" ← {common.short(s.cached_from)}" if s.cached_from else "")
        table.add_row(
            node,
            common.styled_state(s.state.value).replace(s.state.value, state),
            str(s.attempt),
            common.seconds(s.duration),
            ", ".join(outputs.get(s.id, [])),
        )
    if latest:
        console.print(table)


@app.command()
def logs(
    run_id: Annotated[str, typer.Argument(help="Run id or a unique prefix.")],
    step: Annotated[str | None, typer.Option("--step", "-s", help="Only this step.")] = None,
) -> None:
    """Print what each step wrote to stdout and stderr, and the traceback of failures."""
    store = common.store()
    run = store.runs.get_run(run_id, common.project_id())
    steps = store.runs.list_steps(run.id)
    if step is not None:
        steps = [s for s in steps if s.node == step or s.step_name == step]
        if not steps:
            raise NotFoundError(
                f"run {run.id[:8]} has no step {step!r}", "see its steps with `treadle runs show`"
            )
    console = common.console()
    for s in steps:
        console.rule(f"{s.node} (attempt {s.attempt}) {s.state.value}")
        log_uri = s.log_uri
        if s.cached_from and not log_uri:
            original = store.runs.get_step(s.cached_from)
            log_uri = original.log_uri
            console.print(f"[dim](cached: the output of run {common.short(original.run_id)})[/]")
        if log_uri:
            text = store.objects.get_bytes(store.objects.sha_of(log_uri)).decode(errors="replace")
            console.out(text, end="" if text.endswith("\n") else "\n", highlight=False)
        if s.error:
            console.out(s.error, highlight=False)
        if not log_uri and not s.error:
            console.print("[dim](no output)[/]")


@app.command()
def metrics(
    run_id: Annotated[str, typer.Argument(help="Run id or a unique prefix.")],
    key: Annotated[str | None, typer.Argument(help="One metric; all when left out.")] = None,
) -> None:
    """Print metric histories: a sparkline per metric, or every value of one metric."""
    from rich.table import Table

    store = common.store()
    run = store.runs.get_run(run_id, common.project_id())
    records = store.tracking.metric_history(run.id, key)
    if not records:
        raise NotFoundError(
            f"run {run.id[:8]} has no metric {key!r}"
            if key
            else f"run {run.id[:8]} has no metrics",
            "see what it logged with `treadle runs show`",
        )
    console = common.console()
    if key is None:
        history: dict[str, list[float]] = {}
        for m in records:
            history.setdefault(m.key, []).append(m.value)
        table = Table("metric", "last", "min", "max", "values", "history")
        for name, values in history.items():
            table.add_row(
                name,
                f"{values[-1]:.6g}",
                f"{min(values):.6g}",
                f"{max(values):.6g}",
                str(len(values)),
                f"[cyan]{common.sparkline(values, 60)}[/]",
            )
        console.print(table)
        return
    table = Table("step", "value", "time")
    for m in records:
        table.add_row(str(m.step), f"{m.value:.6g}", common.when(m.timestamp))
    console.print(f"{key}  [cyan]{common.sparkline([m.value for m in records], 60)}[/]")
    console.print(table)


@app.command()
def compare(
    run_ids: Annotated[list[str], typer.Argument(help="Two or more run ids.")],
) -> None:
    """Compare runs side by side: params and latest metrics; differences are bold."""
    from rich.table import Table

    if len(run_ids) < 2:
        raise InvalidInputError("compare needs at least two runs", "treadle runs compare A B")
    store, project = common.store(), common.project_id()
    runs = [store.runs.get_run(r, project) for r in run_ids]
    params = [store.tracking.get_params(r.id) for r in runs]
    metrics = [store.tracking.latest_metrics(r.id) for r in runs]
    table = Table("", *[f"{common.short(r.id)}\n{r.name}" for r in runs])
    table.add_row("state", *[common.styled_state(r.state.value) for r in runs])
    table.add_row("duration", *[common.seconds(r.duration) for r in runs])
    for title, rows in (("param", params), ("metric", metrics)):
        for key in sorted({k for row in rows for k in row}):
            cells = [row.get(key) for row in rows]
            shown = [
                "-" if c is None else (f"{c:.6g}" if isinstance(c, float) else str(c))
                for c in cells
            ]
            differ = len(set(shown)) > 1
            table.add_row(f"{title} {key}", *[f"[bold]{s}[/]" if differ else s for s in shown])
    common.console().print(table)


@app.command()
def resume(
    run_id: Annotated[str, typer.Argument(help="A FAILED or CANCELLED run.")],
    executor: Annotated[str | None, typer.Option(help="local, process or ray.")] = None,
    workers: Annotated[int | None, typer.Option(min=1)] = None,
) -> None:
    """Re-run only the steps of a run that did not finish, reusing every finished one.

    With TREADLE_URL set, the server resumes it and this command follows it."""
    if common.remote():
        from treadle.cli import remote_run

        with Progress(common.console()) as progress, interrupted_notice(progress):
            result = remote_run.resume(run_id, progress)
        summarize(result, progress)
        return
    with Progress(common.console()) as progress, interrupted_notice(progress):
        result = resume_run(
            run_id,
            common.local_store(),
            RunOptions(executor=executor, max_workers=workers, on_event=progress),
        )
    summarize(result, progress)


def _why(run: RunRecord) -> str:
    from treadle.automation.why import explain

    if common.remote() and (run.cause or {}).get("event_id"):
        return common.client().why(run.id).summary  # with the event as the server has it
    return explain(run.cause, None)


@app.command()
def why(run_id: Annotated[str, typer.Argument(help="Run id or a unique prefix.")]) -> None:
    """Say why a run happened: who, which schedule, or which trigger and event."""
    store = common.store()
    run = store.runs.get_run(run_id, common.project_id())
    console = common.console()
    console.print(f"run {run.id} ({run.name}): {escape(_why(run))}")
    for key, value in sorted((run.cause or {}).items()):
        shown = common.when(value) if key == "due_at" else value
        console.print(f"  {key:<12} {escape(str(shown))}")
