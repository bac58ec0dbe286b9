"""Kubernetes manifests for a model server, read back through the kubernetes package's
models (a misspelt field or a wrong type does not survive that)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from typer.testing import CliRunner

from treadle.cli.app import app
from treadle.errors import InvalidInputError
from treadle.integrations.kubernetes import ServerManifestOptions, manifests

IMAGE = "registry.example.com/treadle-serve@sha256:" + "d" * 64


class _Body:
    def __init__(self, obj: dict[str, Any]) -> None:
        self.data = json.dumps(obj)


def read(obj: dict[str, Any], model: str) -> Any:
    return k8s.ApiClient().deserialize(_Body(obj), model)


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in objects}


def test_deployment_service_and_autoscaler() -> None:
    options = ServerManifestOptions(
        ref="churn@champion", image=IMAGE, replicas=2, cpu="1", memory="2Gi", hpa_max=6
    )
    objects = by_kind(manifests(options))
    assert set(objects) == {"Deployment", "Service", "HorizontalPodAutoscaler"}

    deployment: k8s.V1Deployment = read(objects["Deployment"], "V1Deployment")
    assert deployment.api_version == "apps/v1" and deployment.metadata.name == "churn"
    assert deployment.spec.replicas == 2
    pod = deployment.spec.template
    assert deployment.spec.selector.match_labels.items() <= pod.metadata.labels.items()
    (container,) = pod.spec.containers
    assert container.image == IMAGE
    assert container.command == ["treadle", "serve", "churn@champion"]
    assert container.args == ["--host", "0.0.0.0", "--port", "8080"]
    assert container.readiness_probe.http_get.path == "/v2/health/ready"
    assert container.readiness_probe.http_get.port == 8080
    assert container.liveness_probe.http_get.path == "/v2/health/live"
    assert container.resources.requests == {"cpu": "1", "memory": "2Gi"}
    assert container.resources.limits == {"cpu": "1", "memory": "2Gi"}
    assert container.env_from[0].secret_ref.name == "treadle"
    assert {m.mount_path for m in container.volume_mounts} == {"/var/lib/treadle", "/tmp"}
    assert container.security_context.read_only_root_filesystem is True

    service: k8s.V1Service = read(objects["Service"], "V1Service")
    assert service.spec.selector.items() <= pod.metadata.labels.items()
    assert service.spec.ports[0].target_port == "http"

    hpa: k8s.V2HorizontalPodAutoscaler = read(
        objects["HorizontalPodAutoscaler"], "V2HorizontalPodAutoscaler"
    )
    assert hpa.spec.scale_target_ref.name == "churn"
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (2, 6)


def test_no_autoscaler_unless_asked() -> None:
    kinds = [o["kind"] for o in manifests(ServerManifestOptions("churn@3", IMAGE))]
    assert kinds == ["Deployment", "Service"]


def test_kserve_inference_service_has_a_valid_custom_predictor() -> None:
    (isvc,) = manifests(
        ServerManifestOptions("Churn_Model@champion", IMAGE, kserve=True, hpa_max=3)
    )
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["kind"] == "InferenceService"
    assert isvc["metadata"]["name"] == "churn-model"
    predictor = isvc["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 3)
    container: k8s.V1Container = read(predictor["containers"][0], "V1Container")
    assert container.name == "kserve-container"
    assert container.ports[0].container_port == 8080
    assert container.readiness_probe.http_get.path == "/v2/health/ready"
    volumes = [read(v, "V1Volume") for v in predictor["volumes"]]
    assert {v.name for v in volumes} == {m.name for m in container.volume_mounts}


@pytest.mark.parametrize(
    ("changes", "wrong"),
    [
        ({"cpu": "lots"}, "--cpu"),
        ({"memory": "2 GB"}, "--memory"),
        ({"hpa_max": 1, "replicas": 3}, "--hpa-max"),
        ({"name": "Not_A_Name"}, "--name"),
        ({"ref": "a@b@c"}, "model reference"),
    ],
)
def test_bad_options_name_what_is_wrong(changes: dict[str, Any], wrong: str) -> None:
    options = ServerManifestOptions(**{"ref": "churn@champion", "image": IMAGE, **changes})
    with pytest.raises(InvalidInputError, match=wrong):
        manifests(options)


def test_deploy_target_kubernetes_writes_the_files(tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    result = CliRunner().invoke(
        app,
        ["deploy", "churn@champion", "--target", "kubernetes", "--image", IMAGE, "-o", str(out)],
        env={"TREADLE_HOME": str(tmp_path / "home")},
    )
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in out.iterdir())
    assert files == ["deployment-churn.yaml", "service-churn.yaml"]
    deployment = read(yaml.safe_load((out / files[0]).read_text()), "V1Deployment")
    assert deployment.spec.template.spec.containers[0].image == IMAGE
