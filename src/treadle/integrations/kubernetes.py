"""Kubernetes manifests for a treadle model server.

The pod runs `treadle serve NAME@ALIAS` from the image given: at start it resolves the
reference in the registry and fetches the model version's files from the artifact
store (through the treadle server named by TREADLE_URL and TREADLE_TOKEN, or straight
from TREADLE_DB_URL and TREADLE_ARTIFACT_URL), all read from one Secret. It answers
readiness on `/v2/health/ready` once a model is loaded, and follows the alias as it
moves, as it does on one machine.

Two shapes: a Deployment with a Service (and, if asked, a HorizontalPodAutoscaler), or
a KServe `InferenceService` whose predictor is the same container.

The objects are built with the `kubernetes` package's models, so a field that is
misspelt or of the wrong type fails here, not at `kubectl apply`.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from treadle.errors import InvalidInputError

PART_OF = "treadle"
HOME = "/var/lib/treadle"
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$")
NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclasses.dataclass(frozen=True)
class ServerManifestOptions:
    """What the model server's pods look like."""

    ref: str
    """NAME@ALIAS (followed as it moves), NAME@3 or NAME."""
    image: str
    name: str | None = None
    """The Kubernetes name; default: the model's name in DNS form."""
    namespace: str | None = None
    replicas: int = 1
    cpu: str = "500m"
    memory: str = "1Gi"
    hpa_max: int | None = None
    """Scale between `replicas` and this many pods on CPU use (no autoscaler if None)."""
    hpa_cpu_percent: int = 70
    port: int = 8080
    secret: str = "treadle"
    """The Secret whose keys become the server's environment (TREADLE_URL, TREADLE_TOKEN…)."""
    kserve: bool = False

    @property
    def model(self) -> str:
        return self.ref.partition("@")[0]

    @property
    def resource_name(self) -> str:
        if self.name:
            return self.name
        cleaned = re.sub(r"[^a-z0-9-]+", "-", self.model.lower()).strip("-")
        return cleaned[:63].rstrip("-") or "model-server"


def check(options: ServerManifestOptions) -> None:
    """Refuse options Kubernetes would refuse, naming the one that is wrong."""
    if not options.model or options.ref.count("@") > 1:
        raise InvalidInputError(f"{options.ref!r} is not a model reference", "e.g. churn@champion")
    if not NAME.match(options.resource_name) or len(options.resource_name) > 63:
        raise InvalidInputError(
            f"--name {options.resource_name!r} is not a Kubernetes name",
            "use lower-case letters, digits and dashes (at most 63)",
        )
    if not options.image or any(c.isspace() for c in options.image):
        raise InvalidInputError(f"--image {options.image!r} is not an image reference")
    for flag, value in (("--cpu", options.cpu), ("--memory", options.memory)):
        if not QUANTITY.match(value):
            raise InvalidInputError(
                f"{flag} {value!r} is not a Kubernetes quantity", "e.g. --cpu 500m --memory 1Gi"
            )
    if options.replicas < 1:
        raise InvalidInputError(f"--replicas must be 1 or more, got {options.replicas}")
    if options.hpa_max is not None and options.hpa_max < options.replicas:
        raise InvalidInputError(
            f"--hpa-max {options.hpa_max} is below --replicas {options.replicas}",
            "the autoscaler scales between --replicas and --hpa-max",
        )


def _labels(options: ServerManifestOptions) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": options.resource_name,
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/part-of": PART_OF,
    }


def _container(options: ServerManifestOptions, name: str) -> Any:
    from kubernetes import client as k8s

    def probe(path: str, failures: int, period: int) -> Any:
        return k8s.V1Probe(
            http_get=k8s.V1HTTPGetAction(path=path, port=options.port),
            period_seconds=period,
            failure_threshold=failures,
        )

    return k8s.V1Container(
        name=name,
        image=options.image,
        command=["treadle", "serve", options.ref],
        args=["--host", "0.0.0.0", "--port", str(options.port)],
        ports=[k8s.V1ContainerPort(container_port=options.port, name="http", protocol="TCP")],
        env=[k8s.V1EnvVar(name="TREADLE_HOME", value=HOME)],
        env_from=[k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=options.secret))],
        resources=k8s.V1ResourceRequirements(
            requests={"cpu": options.cpu, "memory": options.memory},
            limits={"cpu": options.cpu, "memory": options.memory},
        ),
        # loading a model may take a while: up to 5 minutes before liveness counts
        startup_probe=probe("/v2/health/live", 60, 5),
        readiness_probe=probe("/v2/health/ready", 3, 5),
        liveness_probe=probe("/v2/health/live", 3, 10),
        volume_mounts=[
            k8s.V1VolumeMount(name="home", mount_path=HOME),
            k8s.V1VolumeMount(name="tmp", mount_path="/tmp"),
        ],
        security_context=k8s.V1SecurityContext(
            run_as_non_root=True,
            allow_privilege_escalation=False,
            read_only_root_filesystem=True,
            capabilities=k8s.V1Capabilities(drop=["ALL"]),
        ),
    )


def _volumes() -> list[Any]:
    from kubernetes import client as k8s

    return [
        k8s.V1Volume(name="home", empty_dir=k8s.V1EmptyDirVolumeSource()),
        k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource()),
    ]


def _meta(options: ServerManifestOptions) -> Any:
    from kubernetes import client as k8s

    return k8s.V1ObjectMeta(
        name=options.resource_name,
        namespace=options.namespace,
        labels=_labels(options),
        annotations={"treadle.dev/model-ref": options.ref},
    )


def deployment(options: ServerManifestOptions) -> Any:
    from kubernetes import client as k8s

    labels = _labels(options)
    return k8s.V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=_meta(options),
        spec=k8s.V1DeploymentSpec(
            replicas=options.replicas,
            selector=k8s.V1LabelSelector(
                match_labels={"app.kubernetes.io/name": labels["app.kubernetes.io/name"]}
            ),
            strategy=k8s.V1DeploymentStrategy(
                type="RollingUpdate",
                rolling_update=k8s.V1RollingUpdateDeployment(max_unavailable=0, max_surge=1),
            ),
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(
                    labels=labels,
                    annotations={
                        "prometheus.io/scrape": "true",
                        "prometheus.io/path": "/metrics",
                        "prometheus.io/port": str(options.port),
                    },
                ),
                spec=k8s.V1PodSpec(
                    containers=[_container(options, "model-server")],
                    volumes=_volumes(),
                    termination_grace_period_seconds=30,
                ),
            ),
        ),
    )


def service(options: ServerManifestOptions) -> Any:
    from kubernetes import client as k8s

    return k8s.V1Service(
        api_version="v1",
        kind="Service",
        metadata=_meta(options),
        spec=k8s.V1ServiceSpec(
            type="ClusterIP",
            selector={"app.kubernetes.io/name": options.resource_name},
            ports=[k8s.V1ServicePort(name="http", port=80, target_port="http", protocol="TCP")],
        ),
    )


def autoscaler(options: ServerManifestOptions) -> Any:
    from kubernetes import client as k8s

    return k8s.V2HorizontalPodAutoscaler(
        api_version="autoscaling/v2",
        kind="HorizontalPodAutoscaler",
        metadata=_meta(options),
        spec=k8s.V2HorizontalPodAutoscalerSpec(
            scale_target_ref=k8s.V2CrossVersionObjectReference(
                api_version="apps/v1", kind="Deployment", name=options.resource_name
            ),
            min_replicas=options.replicas,
            max_replicas=options.hpa_max,
            metrics=[
                k8s.V2MetricSpec(
                    type="Resource",
                    resource=k8s.V2ResourceMetricSource(
                        name="cpu",
                        target=k8s.V2MetricTarget(
                            type="Utilization", average_utilization=options.hpa_cpu_percent
                        ),
                    ),
                )
            ],
        ),
    )


def inference_service(options: ServerManifestOptions) -> dict[str, Any]:
    """A KServe InferenceService with the model server as a custom predictor container
    (KServe expects it on port 8080; it speaks the Open Inference Protocol there)."""
    from kubernetes import client as k8s

    sanitize = k8s.ApiClient().sanitize_for_serialization
    container = sanitize(_container(options, "kserve-container"))
    predictor: dict[str, Any] = {
        "minReplicas": options.replicas,
        "containers": [container],
        "volumes": sanitize(_volumes()),
    }
    if options.hpa_max is not None:
        predictor.update(
            maxReplicas=options.hpa_max,
            scaleMetric="cpu",
            scaleTarget=options.hpa_cpu_percent,
        )
    meta = sanitize(_meta(options))
    meta.setdefault("annotations", {})["serving.kserve.io/deploymentMode"] = "RawDeployment"
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": meta,
        "spec": {"predictor": predictor},
    }


def manifests(options: ServerManifestOptions) -> list[dict[str, Any]]:
    """The objects to apply, as plain dicts (what `kubectl apply -f` reads)."""
    try:
        from kubernetes import client as k8s
    except ImportError as exc:
        raise InvalidInputError(
            f"writing Kubernetes manifests needs the kubernetes package: {exc}",
            "pip install 'treadle[kubernetes]'",
        ) from None
    check(options)
    if options.kserve:
        return [inference_service(options)]
    objects = [deployment(options), service(options)]
    if options.hpa_max is not None:
        objects.append(autoscaler(options))
    sanitize = k8s.ApiClient().sanitize_for_serialization
    return [sanitize(o) for o in objects]


def write_manifests(options: ServerManifestOptions, folder: str | Path) -> list[Path]:
    """Write one YAML file per object into `folder`; returns their paths."""
    import yaml

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for obj in manifests(options):
        path = out / f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(obj, sort_keys=False))
        written.append(path)
    return written
