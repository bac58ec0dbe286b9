"""The registry: register model versions, move aliases through gates, load models."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from treadle.config import Settings, load_settings
from treadle.errors import InvalidInputError, NotFoundError
from treadle.models import flavors
from treadle.models.format import Manifest, materialize, save_manifest, store_folder
from treadle.models.profile import profile_frame
from treadle.models.signature import infer_signature
from treadle.registry.gates import GateResult, evaluate, require
from treadle.registry.refs import ModelRef, parse_ref, resolve
from treadle.store import Store, open_store
from treadle.store.records import AliasRecord, ModelVersionRecord
from treadle.tracking.context import active

EXAMPLE_ROWS = 5


def _store_and_project(store: Store | None) -> tuple[Store, str]:
    run = active()
    if store is None:
        store = run.store if run is not None else open_store(load_settings())
    project = store.projects.ensure_project(store.settings.project, store.settings.user)
    return store, project.id


def register_model(
    model: Any,
    name: str,
    *,
    input_example: Any = None,
    training_data: Any = None,
    metrics: Mapping[str, float] | None = None,
    flavor: str | None = None,
    trusted: bool = False,
    description: str = "",
    requirements: Sequence[str] = (),
    store: Store | None = None,
) -> ModelVersionRecord:
    """Save `model` as a new version of registered model `name`.

    The signature (columns and dtypes) is inferred from `input_example` (default: the
    first rows of `training_data`); the reference profile for monitoring from
    `training_data` (default: the example). Inside a step or
    a `start_run()` block the version records the run, the step run and the sha256 of
    the step's inputs; `metrics` default to the run's metrics so far.
    """
    store, project_id = _store_and_project(store)
    run = active()
    if metrics is None and run is not None:
        run.metrics.flush()
        metrics = store.tracking.latest_metrics(run.run_id)
    clean_metrics = {}
    for key, value in (metrics or {}).items():
        try:
            clean_metrics[str(key)] = float(value)
        except (TypeError, ValueError):
            raise InvalidInputError(f"metric {key!r} of the model must be a number") from None

    import pandas as pd

    signature = None
    example_rows: list[dict[str, Any]] = []
    profile = None
    if input_example is None and training_data is not None:
        frame = training_data if isinstance(training_data, pd.DataFrame) else None
        input_example = frame.head(5) if frame is not None else None
    if input_example is not None:
        output = None
        if callable(getattr(model, "predict", None)):
            try:
                output = model.predict(input_example)
            except Exception:  # an output schema is a nicety; the input one is what matters
                output = None
        signature = infer_signature(input_example, output)
        frame = (
            input_example
            if isinstance(input_example, pd.DataFrame)
            else pd.DataFrame(input_example, columns=signature.columns)
        )
        example_rows = [
            {k: (None if pd.isna(v) else v) for k, v in row.items()}
            for row in frame.head(EXAMPLE_ROWS).to_dict(orient="records")
        ]
        data = training_data if training_data is not None else frame
        predictions = None
        if callable(getattr(model, "predict", None)):
            try:
                features = data[signature.columns] if isinstance(data, pd.DataFrame) else data
                predictions = model.predict(features)
            except Exception:
                predictions = None
        profile = profile_frame(
            data[signature.columns] if isinstance(data, pd.DataFrame) else data, predictions
        )

    folder = Path(tempfile.mkdtemp(prefix="treadle-model-"))
    try:
        flavor_name, meta = flavors.save(model, folder, flavor)
        files = store_folder(folder, store.objects)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    manifest = Manifest(
        name=name,
        flavor=flavor_name,
        flavor_meta=meta,
        signature=signature.to_dict() if signature else {"inputs": [], "outputs": []},
        files=files,
        metrics=clean_metrics,
        run_id=run.run_id if run else None,
        step_run_id=run.step_run_id if run else None,
        data_hashes=sorted(set(run.input_hashes)) if run else [],
        profile=profile,
        input_example=example_rows,
        requirements=[*meta.get("requirements", []), *requirements],
        created_at=time.time(),
    )
    manifest_sha = save_manifest(manifest, store.objects)
    model_record = store.models.ensure_model(project_id, name, store.settings.user)
    return store.models.add_version(
        model_record.id,
        flavor=flavor_name,
        manifest_sha=manifest_sha,
        signature=manifest.signature,
        metrics=clean_metrics,
        run_id=manifest.run_id,
        step_run_id=manifest.step_run_id,
        trusted=trusted,
        user=store.settings.user,
        description=description,
    )


def set_alias(
    ref: str | ModelRef,
    alias: str,
    *,
    require_conditions: Sequence[str] = (),
    reason: str = "",
    store: Store | None = None,
) -> tuple[AliasRecord, list[GateResult]]:
    """Point `alias` of the model at the version `ref` names, if every condition holds."""
    store, project_id = _store_and_project(store)
    model, version = resolve(store, project_id, ref)
    incumbent = None
    try:
        current = store.models.get_alias(model.id, alias)
        incumbent = store.models.get_version_by_id(current.version_id).metrics
    except NotFoundError:  # no current holder: conditions about it pass
        pass
    results = evaluate(require_conditions, version.metrics, incumbent, alias)
    require(results, f"moving {model.name}@{alias} to version {version.version}")
    gates = "; ".join(f"{r.condition} ({r.detail})" for r in results)
    record = store.models.set_alias(
        model.id,
        alias,
        version.id,
        user=store.settings.user,
        reason=reason or (f"gates passed: {gates}" if gates else "set by hand"),
    )
    return record, results


def promote(
    name: str,
    *,
    source: str,
    target: str,
    require_conditions: Sequence[str] = (),
    store: Store | None = None,
) -> tuple[AliasRecord, list[GateResult]]:
    """Move alias `target` to the version alias (or number) `source` points at, e.g.
    challenger -> champion, through the gate conditions."""
    return set_alias(
        f"{name}@{source}",
        target,
        require_conditions=require_conditions,
        reason=f"promoted from {source}",
        store=store,
    )


def model_cache(settings: Settings) -> Path:
    return settings.home / "model-cache"


def load_version(store: Store, version: ModelVersionRecord) -> tuple[Manifest, Any]:
    """The version's manifest and its model, loaded through its flavor. Every file is
    checked against the hashes recorded at registration; pickles load only if trusted."""
    manifest, folder = materialize(version.manifest_sha, store.objects, model_cache(store.settings))
    loaded = flavors.load(manifest.flavor, folder, manifest.flavor_meta, trusted=version.trusted)
    return manifest, loaded


def load_model(ref: str, *, store: Store | None = None) -> Any:
    """Load a registered model by reference: `churn@champion`, `churn@3` or `churn`."""
    store, project_id = _store_and_project(store)
    _, version = resolve(store, project_id, parse_ref(ref))
    return load_version(store, version)[1]
