"""Metrics in Prometheus format: the handler's own, labelled by API, beside the built-in ones of every service."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from cortado._metrics import BUILTIN_METRICS
from cortado.mesh import LocalMesh
from tests.helpers import eventually
from tests.meshcalls import Deploy, result, submit

HANDLER = """
class Handler:
    def __init__(self, metrics_client):
        self.metrics = metrics_client

    def handle_async(self, payload):
        if payload.get("reserved"):
            self.metrics.increment("cortado_sneaky")
        self.metrics.increment("predictions", tags={"label": payload["label"]})
        self.metrics.gauge("model_temperature", payload["t"])
        self.metrics.histogram("score", 0.25)
        return {"ok": True}
"""


def scrape(mesh: LocalMesh, service: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://{mesh.address(service + '-metrics')}/metrics", timeout=10).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_custom_and_built_in_metrics_appear_on_the_executors_endpoint(
    deploy: Deploy, http: httpx.Client, mesh: LocalMesh
) -> None:
    api = deploy(HANDLER)
    for label in ("cat", "cat", "dog"):
        assert result(http, api, submit(http, api, json={"label": label, "t": 41.5}))["status"] == "completed"

    def counted() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        samples = scrape(mesh, "executor")
        return samples if value(samples, "cortado_requests_finished_total", api=api, status="completed") == 3 else None

    samples = eventually(counted, 10)
    assert value(samples, "predictions_total", api=api, label="cat") == 2
    assert value(samples, "predictions_total", api=api, label="dog") == 1
    assert value(samples, "model_temperature", api=api) == 41.5
    assert value(samples, "score_count", api=api) == 3
    assert value(samples, "cortado_queue_wait_seconds_count", api=api) == 3
    assert value(samples, "cortado_handler_duration_seconds_count", api=api) == 3
    assert value(samples, "cortado_request_duration_seconds_count", api=api) == 3


def test_a_custom_metric_with_the_reserved_prefix_fails_the_request_with_a_clear_error(
    deploy: Deploy, http: httpx.Client, mesh: LocalMesh
) -> None:
    api = deploy(HANDLER)
    body = result(http, api, submit(http, api, json={"label": "x", "t": 1, "reserved": True}))
    assert body["status"] == "failed"
    assert body["error"]["type"] == "MetricError"
    assert "'cortado_sneaky' uses the prefix 'cortado_', reserved for Cortado" in body["error"]["message"]
    samples = eventually(
        lambda: (
            (s := scrape(mesh, "executor"))
            and value(s, "cortado_requests_failed_total", api=api, kind="MetricError") == 1
            and s
        ),
        10,
    )
    assert value(samples, "cortado_requests_finished_total", api=api, status="failed") == 1


def test_each_service_serves_its_own_metrics(deploy: Deploy, http: httpx.Client, mesh: LocalMesh) -> None:
    api = deploy(HANDLER)
    submit(http, api, json={"label": "x", "t": 1})
    ingest = scrape(mesh, "ingest")
    assert value(ingest, "cortado_requests_submitted_total", api=api) == 1
    assert value(ingest, "cortado_grpc_server_handled_total", method="/cortado.v1.Submission/Submit", code="OK")
    assert value(ingest, "cortado_nats_client_messages_total", direction="out")
    scheduler = eventually(
        lambda: (s := scrape(mesh, "scheduler")) and value(s, "cortado_replicas", api=api, state="ready") == 1 and s, 10
    )
    assert value(scheduler, "cortado_queue_length", api=api) is not None
    assert value(scheduler, "cortado_in_flight", api=api) is not None
    results = scrape(mesh, "results")
    assert any(name == "cortado_nats_client_reconnects_total" for name, _ in results)


def test_every_built_in_metric_name_is_exposed_by_some_service(mesh: LocalMesh) -> None:
    exposed = set()
    for service in ("ingest", "results", "scheduler", "executor", "webhooks"):
        text = httpx.get(f"http://{mesh.address(service + '-metrics')}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            exposed.add(family.name)
            exposed.update(sample.name for sample in family.samples)
    missing = [name for name in BUILTIN_METRICS if name not in exposed and name.removesuffix("_total") not in exposed]
    assert missing == []
