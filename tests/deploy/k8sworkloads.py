"""The Cortado workloads of deploy/k8s/ and what their tests share: the kustomize marker, an overlay's kustomization,
the NATS configuration and the scheduler's TLS mount."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy.manifests import (
    K8S,
    Doc,
    base_documents,
    find,
    kubectl,
)

CORTADO_WORKLOADS = ("ingest", "results", "scheduler", "executor", "webhooks", "envoy")


needs_kustomize = pytest.mark.skipif(kubectl() is None, reason="kubectl (with its built-in kustomize) is not installed")


def overlay_kustomization(overlay: str) -> dict[str, Any]:
    return dict(yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text()))


# --- NATS -----------------------------------------------------------------------------------------------


def nats_conf(docs: list[Doc]) -> str:
    return str(find(docs, "ConfigMap", "nats-config")["data"]["nats.conf"])


def scheduler_tls_mount(container: dict[str, Any]) -> str:
    """Where the scheduler's container mounts the Secret cortado-scheduler-tls."""
    [volume] = [
        v
        for v in find(base_documents(), "Deployment", "scheduler")["spec"]["template"]["spec"]["volumes"]
        if v.get("secret", {}).get("secretName") == "cortado-scheduler-tls"
    ]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    return str(mount["mountPath"])
