"""A Kubernetes Service `api-<name>` per deployed API, so handlers chain by DNS as in Cortex."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

API_LABEL = "cortado.dev/api"
CHAIN_PORT = 8888


def api_service(api: str, namespace: str, selector: Mapping[str, str], target_port: int = CHAIN_PORT) -> dict[str, Any]:
    """The Service manifest for one API: port 8888 on Envoy's pods, whose Host-based routing picks the API."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": f"api-{api}",
            "namespace": namespace,
            "labels": {
                API_LABEL: api,
                "app.kubernetes.io/part-of": "cortado",
                "app.kubernetes.io/managed-by": "cortado-scheduler",
            },
        },
        "spec": {
            "selector": dict(selector),
            "ports": [{"name": "http", "port": CHAIN_PORT, "targetPort": target_port, "protocol": "TCP"}],
        },
    }


class KubeServices:
    """Keeps the `api-<name>` Services of a namespace equal to the deployed APIs (the leader scheduler calls sync)."""

    def __init__(self, namespace: str, selector: Mapping[str, str], target_port: int = CHAIN_PORT) -> None:
        from kubernetes import client, config

        config.load_incluster_config()
        self._api = client.CoreV1Api()
        self._namespace = namespace
        self._selector = dict(selector)
        self._target_port = target_port

    async def sync(self, apis: set[str]) -> None:
        """Create the missing Services and delete those of deleted APIs."""
        await asyncio.to_thread(self._sync, apis)

    def _sync(self, apis: set[str]) -> None:
        existing = self._api.list_namespaced_service(self._namespace, label_selector=API_LABEL)
        present = {item.metadata.labels[API_LABEL]: item.metadata.name for item in existing.items}
        for api in sorted(apis - set(present)):
            body = api_service(api, self._namespace, self._selector, self._target_port)
            self._api.create_namespaced_service(self._namespace, body)
            log.info("service created", extra={"api": api, "service": f"api-{api}"})
        for api in sorted(set(present) - apis):
            self._api.delete_namespaced_service(present[api], self._namespace)
            log.info("service deleted", extra={"api": api, "service": present[api]})
