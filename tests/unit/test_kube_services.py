"""The api-<name> Service the scheduler creates per API in Kubernetes: valid, and aimed at Envoy's pods."""

from __future__ import annotations

import kubernetes_validate
import yaml

from services.scheduler.__main__ import ENVOY_SELECTOR
from services.scheduler.kube import api_service
from tests.deploy.manifests import K8S


def test_the_service_of_an_api_is_valid_for_kubernetes() -> None:
    manifest = api_service("text-generator", "cortado", ENVOY_SELECTOR)
    kubernetes_validate.validate(manifest, "1.32", strict=True)
    assert manifest["metadata"]["name"] == "api-text-generator"
    assert manifest["spec"]["ports"][0]["port"] == 8888


def test_the_service_selects_the_envoy_pods_of_the_manifests() -> None:
    envoy = [
        doc
        for doc in yaml.safe_load_all((K8S / "base" / "envoy.yaml").read_text())
        if doc and doc["kind"] == "Deployment"
    ]
    labels = envoy[0]["spec"]["template"]["metadata"]["labels"]
    assert ENVOY_SELECTOR.items() <= labels.items()
