"""Chaining: a handler reaches any API at http://api-<name>:8888/, and its other outbound HTTP still works."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import httpx
import pytest

from cortado.client import SchedulerClient
from cortado.mesh import LocalMesh
from tests.helpers import eventually, write_project
from tests.meshcalls import MESH_ENV, result, submit, wait_ready
from tests.otlp import OtlpReceiver

CALLEE = """
from cortado import log


class Handler:
    def __init__(self, metrics_client):
        self.metrics = metrics_client

    def handle_async(self, payload):
        log.info("doubling", extra={"x": payload["x"]})
        self.metrics.increment("doublings")
        return {"double": payload["x"] * 2}
"""

CALLER = """
import json
import urllib.request

from cortado import log


class Handler:
    def __init__(self, metrics_client):
        self.metrics = metrics_client

    def handle_async(self, payload):
        log.info("calling the callee")
        self.metrics.increment("chained_calls")
        submit = urllib.request.Request(
            "http://api-callee:8888/",
            data=json.dumps({"x": payload["x"]}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(submit, timeout=30) as reply:
            request_id = json.load(reply)["id"]
        while True:
            with urllib.request.urlopen(f"http://api-callee:8888/{request_id}?wait=20", timeout=30) as reply:
                state = json.load(reply)
            if state["status"] in ("completed", "failed"):
                break
        outside = None
        if payload.get("outside"):
            with urllib.request.urlopen(payload["outside"], timeout=30) as reply:
                outside = reply.read().decode()
        return {"callee_id": request_id, "callee": state, "outside": outside}
"""


@pytest.fixture(scope="module")
def outside_server() -> Iterator[str]:
    """An HTTP server outside the mesh, reached by host name (so through the proxy, not NO_PROXY)."""

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"hello from outside, via {self.headers.get('Via') or self.headers.get('x-forwarded-proto')}"
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://localhost:{server.server_address[1]}/greeting"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def chained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, OtlpReceiver, LocalMesh]]:
    root = tmp_path_factory.mktemp("chained")
    with OtlpReceiver() as receiver:
        env = {**MESH_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        with LocalMesh(root / "mesh", env=env) as mesh, SchedulerClient(mesh.scheduler_address) as scheduler:
            for name, source in (("callee", CALLEE), ("caller", CALLER)):
                scheduler.deploy(write_project(root, name, source))
            for name in ("callee", "caller"):
                wait_ready(scheduler, name)
            with httpx.Client(base_url=mesh.http_url, timeout=60) as http:
                yield http, receiver, mesh


def test_a_handler_calls_another_api_by_its_service_name_and_returns_its_result(
    chained: tuple[httpx.Client, OtlpReceiver, LocalMesh], outside_server: str
) -> None:
    http, _, _ = chained
    body = result(http, "caller", submit(http, "caller", json={"x": 21, "outside": outside_server}))
    assert body["status"] == "completed", body
    assert body["result"]["callee"]["status"] == "completed"
    assert body["result"]["callee"]["result"] == {"double": 42}
    # The chained request is an ordinary request of the callee, visible to anyone with its id.
    direct = http.get(f"/callee/{body['result']['callee_id']}").json()
    assert direct["result"] == {"double": 42}
    # Other outbound HTTP keeps working through the same proxy.
    assert body["result"]["outside"].startswith("hello from outside")


def test_one_chained_request_is_one_trace_in_spans_logs_and_metrics_of_both_apis(
    chained: tuple[httpx.Client, OtlpReceiver, LocalMesh],
) -> None:
    http, receiver, mesh = chained
    caller_id = submit(http, "caller", json={"x": 1})
    body = result(http, "caller", caller_id)
    callee_id = body["result"]["callee_id"]

    def handler_span(request_id: str) -> str | None:
        return next(
            (
                s.trace_id
                for s in receiver.spans()
                if s.name == "handler" and s.attributes.get("cortado.request_id") == request_id
            ),
            None,
        )

    caller_trace = eventually(lambda: handler_span(caller_id), 30, interval=0.5)
    callee_trace = eventually(lambda: handler_span(callee_id), 30, interval=0.5)
    assert callee_trace == caller_trace
    # The trace spans both APIs, from the caller's Envoy span to the callee's result write.
    services = {s.service for s in receiver.spans(caller_trace)}
    assert {"cortado-envoy", "cortado-ingest", "cortado-handler-caller", "cortado-handler-callee"} <= services

    # Both handlers' log lines carry that trace id.
    with SchedulerClient(mesh.scheduler_address) as scheduler:
        for api, message, request_id in (
            ("caller", "calling the callee", caller_id),
            ("callee", "doubling", callee_id),
        ):
            lines = [json.loads(raw) for raw in scheduler.logs(api)]
            line = next(x for x in lines if x["message"] == message and x["labels"]["request_id"] == request_id)
            assert line["trace_id"] == caller_trace

    # Prometheus output has the built-in and custom metrics of both.
    metrics = httpx.get(f"http://{mesh.address('executor-metrics')}/metrics").text
    for api, custom in (("caller", "chained_calls_total"), ("callee", "doublings_total")):
        assert f'{custom}{{api="{api}"}}' in metrics
        assert f'cortado_requests_finished_total{{api="{api}",status="completed"}}' in metrics
        assert f'cortado_handler_duration_seconds_count{{api="{api}"}}' in metrics


def test_api_service_names_also_work_on_the_public_port(chained: tuple[httpx.Client, OtlpReceiver, LocalMesh]) -> None:
    """In Kubernetes, Service api-<name> points at Envoy's public port: the Host header picks the API."""
    http, _, _ = chained
    reply = http.post("/", json={"x": 5}, headers={"Host": "api-callee:8888"})
    assert reply.status_code == 200, reply.text
    state = http.get(f"/{reply.json()['id']}", params={"wait": 20}, headers={"Host": "api-callee"}).json()
    assert state["result"] == {"double": 10}
