"""The NATS setups of deploy/ as their tests read them: the Compose file, the Kubernetes NATS configuration and its
routes, the services that connect to NATS and the Secret of their passwords."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from cortado._natsauth import ROUTE_USER
from tests.deploy.manifests import (
    DEPLOY,
    Doc,
    containers,
    find,
    kubectl,
    nats_password_variable,
)

COMPOSE = DEPLOY / "docker-compose.yaml"


COMPOSE_NATS_CONF = DEPLOY / "nats" / "nats.conf"


SERVICES = ("ingest", "results", "scheduler", "executor", "webhooks")
"""The Cortado services that connect to NATS, each as the NATS user of its name."""


SECRET = "cortado-nats"
"""The Kubernetes Secret holding one password per NATS user (and the route user), created with kubectl."""


needs_kustomize = pytest.mark.skipif(kubectl() is None, reason="kubectl (with its built-in kustomize) is not installed")


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def k8s_nats_conf(docs: list[Doc]) -> str:
    return str(find(docs, "ConfigMap", "nats-config")["data"]["nats.conf"])


def nats_container(docs: list[Doc]) -> Doc:
    return next(c for c in containers(find(docs, "StatefulSet", "nats")) if c["name"] == "nats")


def routes_value(docs: list[Doc]) -> str:
    env = nats_container(docs)["env"]
    names = [e["name"] for e in env]
    # Kubernetes fills in $(NAME) only from variables listed before.
    assert names.index(nats_password_variable(ROUTE_USER)) < names.index("CORTADO_NATS_ROUTES")
    return str(next(e["value"] for e in env if e["name"] == "CORTADO_NATS_ROUTES"))
