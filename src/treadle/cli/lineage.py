"""`treadle lineage`: where an artifact came from and where it went."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from treadle.cli import common
from treadle.store.protocols import StoreView
from treadle.store.records import ArtifactRecord


def _label(a: ArtifactRecord) -> str:
    return f"[bold]{a.name}[/] {common.short(a.id)} ({a.kind}, {a.size} bytes)"


def _add_upstream(store: StoreView, artifact_id: str, tree: Any, depth: int) -> None:
    """Under `tree`: the step run that computed the artifact, then its inputs, recursively."""
    lineage = store.artifacts.lineage(artifact_id)
    producers = [e for e in lineage.produced_by if not e.step_run.cached_from]
    for entry in producers[:1]:
        s = entry.step_run
        branch = tree.add(
            f"← step [bold]{s.node}[/] run {common.short(s.run_id)} "
            f"{common.styled_state(s.state.value)}"
        )
        if depth <= 1:
            continue
        for input_id in store.artifacts.step_input_ids(s.id):
            parent = store.artifacts.get_artifact(input_id)
            _add_upstream(store, input_id, branch.add(_label(parent)), depth - 1)


def lineage(
    artifact_id: Annotated[str, typer.Argument(help="Artifact id or a unique prefix.")],
    depth: Annotated[int, typer.Option(min=1, help="How many steps to walk upstream.")] = 5,
) -> None:
    """Show where an artifact came from (walking upstream) and what consumed it."""
    from rich.tree import Tree

    store = common.store()
    art = store.artifacts.get_artifact(artifact_id, common.project_id())
    info = store.artifacts.lineage(art.id)
    console = common.console()
    console.print(
        f"[bold]artifact {art.id}[/]  {art.name} ({art.kind}, {art.materializer}, {art.size} bytes)"
    )
    console.print(f"sha256 {art.sha256}\ntype   {art.python_type}")

    produced = Tree("[bold]produced by[/]")
    if info.produced_by:
        _add_upstream(store, art.id, produced, depth)
        for e in info.produced_by:
            if e.step_run.cached_from:
                produced.add(
                    f"↺ reused from the cache by step {e.step_run.node} in run "
                    f"{common.short(e.step_run.run_id)}"
                )
    else:
        produced.add("[dim]logged outside a step[/]")
    console.print(produced)

    consumed = Tree("[bold]consumed by[/]")
    for e in info.consumed_by:
        s = e.step_run
        branch = consumed.add(
            f"→ step [bold]{s.node}[/] (input {e.name}) run "
            f"{common.short(s.run_id)} {common.styled_state(s.state.value)}"
        )
        for name, out in store.artifacts.step_outputs(s.id).items():
            branch.add(f"{name}: {_label(out)}")
    if not info.consumed_by:
        consumed.add("[dim]nothing yet[/]")
    console.print(consumed)
