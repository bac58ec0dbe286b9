"""`treadle serve` and `treadle deploy`: a registered model becomes a prediction service.

Against a server (TREADLE_URL), the model server still runs here: it reads the registry
and the model's files through the server's API, writes its prediction log under the
local home, and `deploy` goes through the server's route as the token's user.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from treadle.cli import common
from treadle.cli.actions import actions
from treadle.errors import InvalidInputError

if TYPE_CHECKING:
    from treadle.serving.server import ServeOptions

# The serving modules pull in asyncio, orjson and the model flavors: imported in the
# commands that use them so that `treadle --help` and `treadle run` stay quick.

Host = Annotated[str, typer.Option(help="Address to listen on (127.0.0.1 unless told).")]
Port = Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")]
Batch = Annotated[
    bool, typer.Option("--batch/--no-batch", help="Join concurrent requests into one predict call.")
]
MaxBatch = Annotated[int, typer.Option(min=1, help="Most rows in one batched predict call.")]
MaxWait = Annotated[
    float, typer.Option(min=0, help="Milliseconds a batch may wait for more requests (0: none).")
]
MaxBodyMb = Annotated[float, typer.Option(min=0.001, help="Largest request body, in MiB.")]
MaxRows = Annotated[int, typer.Option(min=1, help="Most rows in one request.")]
LogPredictions = Annotated[
    bool,
    typer.Option(
        "--log-predictions/--no-log-predictions", help="Write every prediction to the log."
    ),
]


def options(
    host: str,
    port: int,
    batch: bool,
    max_batch: int,
    max_wait_ms: float,
    log_predictions: bool,
    max_body_mb: float = 8.0,
    max_rows: int = 100_000,
) -> ServeOptions:
    from treadle.serving.app import Batching, Limits
    from treadle.serving.server import ServeOptions

    return ServeOptions(
        host=host,
        port=port,
        batching=Batching(enabled=batch, max_batch=max_batch, max_wait_ms=max_wait_ms),
        limits=Limits(max_body_bytes=int(max_body_mb * 1024 * 1024), max_rows=max_rows),
        log_predictions=log_predictions,
    )


def announce(message: str) -> None:
    common.err_console().print(message)


def serve(
    ref: Annotated[str, typer.Argument(help="NAME@ALIAS (followed as it moves), NAME@3 or NAME.")],
    host: Host = "127.0.0.1",
    port: Port = 8001,
    batch: Batch = True,
    max_batch: MaxBatch = 256,
    max_wait_ms: MaxWait = 0.0,
    log_predictions: LogPredictions = True,
    max_body_mb: MaxBodyMb = 8.0,
    max_rows: MaxRows = 100_000,
) -> None:
    """Serve a registered model over HTTP until Ctrl-C.

    POST /predict, /invocations (MLflow) and /v2/models/NAME/infer (Open Inference
    Protocol); GET /v2/health/ready and /metrics (Prometheus). When the alias moves, the
    new version is loaded and warmed, then swapped in without dropping a request.
    """
    from treadle.registry import parse_ref
    from treadle.serving.server import RefSource, run

    store = common.store()
    source = RefSource(store, common.project_id(), parse_ref(ref))
    source.poll()  # a missing model or version is an error now, not in the server log
    run(
        store,
        source,
        options(host, port, batch, max_batch, max_wait_ms, log_predictions, max_body_mb, max_rows),
        announce,
    )


def parse_percent(text: str, option: str = "--canary") -> float:
    value = text.strip().rstrip("%")
    try:
        share = float(value) / 100
    except ValueError:
        raise InvalidInputError(
            f"{option} {text!r} is not a percentage", f"e.g. {option} 10%"
        ) from None
    if not 0 < share < 1:
        raise InvalidInputError(f"{option} {text!r} must be between 0% and 100%")
    return share


def deploy(
    ref: Annotated[str, typer.Argument(help="NAME@ALIAS the deployment follows, or NAME@3.")],
    name: Annotated[
        str | None,
        typer.Option(
            "--name", "-n", help="The deployment's name (Kubernetes: default the model's)."
        ),
    ] = None,
    canary: Annotated[
        str | None, typer.Option(help="Send this share of requests to the candidate, e.g. 10%.")
    ] = None,
    shadow: Annotated[
        bool,
        typer.Option("--shadow", help="Mirror requests to the candidate; answer from the primary."),
    ] = False,
    candidate: Annotated[
        str, typer.Option(help="Alias (or version) of the candidate for --canary / --shadow.")
    ] = "challenger",
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Port where `treadle up` runs its server."),
    ] = None,
    target: Annotated[
        str,
        typer.Option(help="local (a managed deployment) or kubernetes (write manifests to -o)."),
    ] = "local",
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Kubernetes: folder for the manifests.")
    ] = Path("k8s"),
    image: Annotated[str, typer.Option(help="Kubernetes: the model server's image.")] = "",
    replicas: Annotated[
        int, typer.Option(min=1, help="Kubernetes: pods (the autoscaler's floor).")
    ] = 1,
    cpu: Annotated[str, typer.Option(help="Kubernetes: CPU per pod.")] = "500m",
    memory: Annotated[str, typer.Option(help="Kubernetes: memory per pod.")] = "1Gi",
    hpa_max: Annotated[
        int | None, typer.Option(help="Kubernetes: add an autoscaler up to this many pods.")
    ] = None,
    kserve: Annotated[
        bool, typer.Option("--kserve", help="Kubernetes: a KServe InferenceService instead.")
    ] = False,
    namespace: Annotated[str | None, typer.Option(help="Kubernetes: the namespace.")] = None,
    secret: Annotated[
        str, typer.Option(help="Kubernetes: the Secret with TREADLE_URL and TREADLE_TOKEN.")
    ] = "treadle",
) -> None:
    """Create or change a managed deployment that follows an alias.

    Every change is a numbered revision; `treadle deployments rollback NAME` goes back.
    With --port, `treadle up` runs and supervises its server; otherwise start it with
    `treadle deployments serve NAME`.

    With --target kubernetes, writes the manifests that run the model server there
    instead: a Deployment and a Service (--hpa-max adds an autoscaler), or a KServe
    InferenceService (--kserve). Example: treadle deploy churn@champion --target
    kubernetes --image REPO@sha256:... -o k8s/
    """
    if target == "kubernetes":
        from treadle.integrations.kubernetes import ServerManifestOptions, write_manifests

        if not image:
            raise InvalidInputError(
                "--target kubernetes needs --image", "e.g. --image REPO@sha256:..."
            )
        written = write_manifests(
            ServerManifestOptions(
                ref=ref,
                image=image,
                name=name,
                namespace=namespace,
                replicas=replicas,
                cpu=cpu,
                memory=memory,
                hpa_max=hpa_max,
                secret=secret,
                kserve=kserve,
            ),
            out,
        )
        for path in written:
            common.console().print(f"wrote {path}")
        return
    if target != "local":
        raise InvalidInputError(f"--target {target!r} is not one of: local, kubernetes")
    if not name:
        raise InvalidInputError("--name is required for a managed deployment", "e.g. --name api")
    if canary and shadow:
        raise InvalidInputError("choose --canary or --shadow, not both")
    policy = "canary" if canary else "shadow" if shadow else "single"
    deployment, revision = actions().deploy(
        ref,
        name,
        policy=policy,
        candidate=candidate if policy != "single" else None,
        canary=parse_percent(canary) if canary else 0.1,
        port=port,
    )
    common.console().print(
        f"deployment {deployment.name}: revision {revision.number} — {revision.reason}"
    )
    if deployment.spec.get("port"):
        common.console().print(
            f"`treadle up` serves it on http://127.0.0.1:{deployment.spec['port']}"
        )
    else:
        common.console().print(f"serve it with `treadle deployments serve {deployment.name}`")


def serve_deployment(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    host: Host = "127.0.0.1",
    port: Port = 8001,
    batch: Batch = True,
    max_batch: MaxBatch = 256,
    max_wait_ms: MaxWait = 0.0,
    log_predictions: LogPredictions = True,
    max_body_mb: MaxBodyMb = 8.0,
    max_rows: MaxRows = 100_000,
) -> None:
    """Run a deployment's model server until Ctrl-C, following its revisions."""
    from treadle.serving.server import DeploymentSource, run

    store = common.store()
    source = DeploymentSource(store, common.project_id(), name, sync=actions().sync)
    source.poll()  # a revision that cannot be served is an error now, not in the server log
    run(
        store,
        source,
        options(host, port, batch, max_batch, max_wait_ms, log_predictions, max_body_mb, max_rows),
        announce,
    )
