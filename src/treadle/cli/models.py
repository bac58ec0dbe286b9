"""`treadle models`: the registry — versions, aliases, gates."""

from __future__ import annotations

from typing import Annotated

import typer

from treadle.cli import common
from treadle.cli.actions import actions

# The registry (and the model flavors under it) load in the commands that use them.

app = typer.Typer(help="Registered models, their versions and aliases.", no_args_is_help=True)

Require = Annotated[
    list[str] | None,
    typer.Option(
        "--require",
        "-r",
        help="A gate condition, e.g. 'accuracy >= 0.9' or "
        "'auc >= champion.auc - 0.01'; repeat for more.",
    ),
]


@app.command("list")
def list_models() -> None:
    """List registered models with their newest version and aliases."""
    from rich.table import Table

    store, project = common.store(), common.project_id()
    models = store.models.list_models(project)
    table = Table("name", "versions", "latest", "aliases", "created")
    for m in models:
        versions = store.models.list_versions(m.id)
        aliases = ", ".join(f"{a.alias}→v{a.version}" for a in store.models.list_aliases(m.id))
        table.add_row(
            m.name,
            str(len(versions)),
            f"v{versions[-1].version}" if versions else "-",
            aliases or "-",
            common.when(m.created_at),
        )
    common.console().print(
        table if models else "no models yet: register one with treadle.register_model(...)"
    )


@app.command()
def show(name: Annotated[str, typer.Argument(help="Model name, or NAME@ALIAS / NAME@3.")]) -> None:
    """Show a model version: flavor, signature, metrics, lineage, aliases."""
    from rich.table import Table

    from treadle.models.format import read_manifest
    from treadle.registry import resolve

    store, project = common.store(), common.project_id()
    model, version = resolve(store, project, name)
    manifest = read_manifest(version.manifest_sha, store.objects)
    console = common.console()
    aliases = [a.alias for a in store.models.list_aliases(model.id) if a.version == version.version]
    console.print(
        f"[bold]{model.name} v{version.version}[/]"
        + (f"  ({', '.join(aliases)})" if aliases else "")
    )
    console.print(
        f"flavor     {version.flavor}" + ("  [yellow]trusted[/]" if version.trusted else "")
    )
    console.print(f"registered {common.when(version.created_at)} by {version.created_by}")
    if version.run_id:
        console.print(
            f"run        {common.short(version.run_id)}"
            + (f"  step run {common.short(version.step_run_id)}" if version.step_run_id else "")
        )
    if manifest.data_hashes:
        console.print("data       " + ", ".join(h[:12] for h in manifest.data_hashes))
    if version.metrics:
        console.print("metrics    " + ", ".join(f"{k}={v:.6g}" for k, v in version.metrics.items()))
    if manifest.requirements:
        console.print("requires   " + ", ".join(manifest.requirements))
    signature = manifest.model_signature
    if signature.inputs:
        table = Table("input", "dtype", "nullable", title="signature")
        for c in signature.inputs:
            table.add_row(c.name, c.dtype, "yes" if c.nullable else "no")
        for c in signature.outputs:
            table.add_row(f"→ {c.name}", c.dtype, "")
        console.print(table)


@app.command()
def versions(name: Annotated[str, typer.Argument(help="Model name.")]) -> None:
    """List every version of a model with its metrics and aliases."""
    from rich.table import Table

    store, project = common.store(), common.project_id()
    model = store.models.get_model(project, name)
    by_version: dict[int, list[str]] = {}
    for a in store.models.list_aliases(model.id):
        by_version.setdefault(a.version, []).append(a.alias)
    table = Table("version", "flavor", "metrics", "aliases", "run", "registered")
    for v in store.models.list_versions(model.id):
        table.add_row(
            str(v.version),
            v.flavor,
            ", ".join(f"{k}={x:.4g}" for k, x in v.metrics.items()) or "-",
            ", ".join(by_version.get(v.version, [])) or "-",
            common.short(v.run_id),
            common.when(v.created_at),
        )
    common.console().print(table)


@app.command()
def alias(
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS", help="e.g. champion.")],
    version: Annotated[int, typer.Argument(help="The version the alias should point at.")],
    require: Require = None,
) -> None:
    """Point an alias at a version (through gate conditions, if given)."""
    record, results = actions().set_alias(name, alias_name, version, require or [])
    for r in results:
        common.console().print(f"  [green]✓[/] {r.condition}  ({r.detail})")
    common.console().print(f"{name}@{record.alias} → v{record.version}")


@app.command()
def promote(
    name: Annotated[str, typer.Argument(help="Model name.")],
    source: Annotated[str, typer.Option("--from", help="Alias (or version) to promote.")],
    target: Annotated[str, typer.Option("--to", help="Alias to move, e.g. champion.")],
    require: Require = None,
) -> None:
    """Move an alias to the version another alias points at, e.g. challenger → champion,
    refusing (naming the failed condition) unless every gate condition holds."""
    record, results = actions().promote(name, source, target, require or [])
    for r in results:
        common.console().print(f"  [green]✓[/] {r.condition}  ({r.detail})")
    common.console().print(f"promoted: {name}@{record.alias} → v{record.version}")


@app.command()
def history(
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias_name: Annotated[str | None, typer.Argument(metavar="[ALIAS]")] = None,
) -> None:
    """Every move of the model's aliases: when, by whom, from which version to which."""
    from rich.table import Table

    store, project = common.store(), common.project_id()
    model = store.models.get_model(project, name)
    table = Table("when", "alias", "from", "to", "by", "why")
    for e in store.models.alias_history(model.id, alias_name):
        table.add_row(
            common.when(e.at),
            e.alias,
            f"v{e.from_version}" if e.from_version else "-",
            f"v{e.to_version}" if e.to_version else "(removed)",
            e.by,
            e.reason,
        )
    common.console().print(table)


@app.command()
def trust(
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[int, typer.Argument(help="Version to mark trusted.")],
    revoke: Annotated[bool, typer.Option("--revoke", help="Take the trust back.")] = False,
) -> None:
    """Mark a version trusted: only then do pickled models (or unknown types) load."""
    updated = actions().trust(name, version, not revoke)
    common.console().print(
        f"{name} v{updated.version} is " + ("trusted" if updated.trusted else "no longer trusted")
    )
