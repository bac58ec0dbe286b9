"""Uploading a compiled pipeline to Kubeflow Pipelines and starting a run of it."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from treadle.errors import InvalidInputError, StoreUnavailableError


@dataclasses.dataclass(frozen=True)
class Submitted:
    run_id: str
    url: str


def submit(
    pipeline_yaml: str | Path,
    host: str,
    *,
    params: Mapping[str, Any] | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    namespace: str | None = None,
    existing_token: str | None = None,
) -> Submitted:
    """Start a run of the compiled pipeline at `pipeline_yaml` on the KFP API at `host`."""
    try:
        import kfp
    except ImportError as exc:
        raise InvalidInputError(
            f"submitting to Kubeflow Pipelines needs the kfp SDK: {exc}",
            "pip install 'treadle[kfp]'",
        ) from None
    path = Path(pipeline_yaml)
    if not path.is_file():
        raise InvalidInputError(
            f"no compiled pipeline at {path}",
            "compile one with `treadle compile FILE --target kfp`",
        )
    try:
        with warnings.catch_warnings():  # a note on server versions, not for the user
            warnings.simplefilter("ignore", FutureWarning)
            client = kfp.Client(host=host, namespace=namespace, existing_token=existing_token)
        result = client.create_run_from_pipeline_package(
            str(path),
            arguments=dict(params or {}),
            run_name=run_name,
            experiment_name=experiment,
            namespace=namespace,
        )
    except Exception as exc:
        raise StoreUnavailableError(
            f"Kubeflow Pipelines at {host} did not take the run: {exc}",
            "check --host (the KFP API, e.g. http://127.0.0.1:8888) and that it is reachable",
        ) from exc
    return Submitted(
        run_id=str(result.run_id), url=f"{host.rstrip('/')}/#/runs/details/{result.run_id}"
    )
