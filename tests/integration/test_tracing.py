"""One trace per request, from Envoy through ingest, the queue wait, the handler and the result write."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cortado.client import SchedulerClient
from cortado.mesh import LocalMesh
from tests.helpers import eventually, write_project
from tests.meshcalls import MESH_ENV, result, submit, wait_ready
from tests.otlp import OtlpReceiver, Span, ancestors

HANDLER = """
from cortado import log


class Handler:
    def handle_async(self, payload):
        log.info("working")
        return {"ok": True}
"""

EXPECTED = {"queue wait": "cortado-executor", "handler": "cortado-handler-traced", "result write": "cortado-executor"}
"""Span names, and the service that records each: the executor waits and writes, the handler process runs."""


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalMesh, OtlpReceiver, httpx.Client, str]]:
    """A private mesh exporting to a real OTLP receiver, with one API deployed."""
    root = tmp_path_factory.mktemp("traced")
    with OtlpReceiver() as receiver:
        env = {**MESH_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        with LocalMesh(root / "mesh", env=env) as mesh, SchedulerClient(mesh.scheduler_address) as scheduler:
            scheduler.deploy(write_project(root, "traced", HANDLER))
            wait_ready(scheduler, "traced")
            with httpx.Client(base_url=mesh.http_url, timeout=30) as http:
                yield mesh, receiver, http, "traced"


def _complete_trace(receiver: OtlpReceiver, trace_id: str) -> list[Span] | None:
    spans = receiver.spans(trace_id)
    names = {s.name for s in spans}
    has_envoy = any(s.service == "cortado-envoy" for s in spans)
    has_ingest = any(s.service == "cortado-ingest" for s in spans)
    return spans if names >= set(EXPECTED) and has_envoy and has_ingest else None


def test_an_incoming_traceparent_is_continued_through_every_hop(
    traced: tuple[LocalMesh, OtlpReceiver, httpx.Client, str],
) -> None:
    mesh, receiver, http, api = traced
    trace_id = secrets.token_hex(16)
    parent = secrets.token_hex(8)
    request_id = submit(http, api, json={"x": 1}, headers={"traceparent": f"00-{trace_id}-{parent}-01"})
    assert result(http, api, request_id)["status"] == "completed"

    # Envoy flushes its spans about every 5 s.
    spans = eventually(lambda: _complete_trace(receiver, trace_id), 30, interval=0.5)
    envoy = next(s for s in spans if s.service == "cortado-envoy" and s.parent_id == parent)
    ingest = next(s for s in spans if s.service == "cortado-ingest")
    assert envoy in ancestors(spans, ingest)
    for name, service in EXPECTED.items():
        span = next(s for s in spans if s.name == name)
        assert span.service == service, name
        assert ingest in ancestors(spans, span), name
        assert span.attributes["cortado.request_id"] == request_id

    # The handler's log line carries the trace and the handler span.
    handler = next(s for s in spans if s.name == "handler")
    with SchedulerClient(mesh.scheduler_address) as scheduler:
        logged = [json.loads(raw) for raw in scheduler.logs(api)]
    line = next(x for x in logged if x["message"] == "working" and x["labels"]["request_id"] == request_id)
    assert line["trace_id"] == trace_id
    assert line["span_id"] == handler.span_id


def test_a_request_without_traceparent_still_gets_one_trace(
    traced: tuple[LocalMesh, OtlpReceiver, httpx.Client, str],
) -> None:
    _, receiver, http, api = traced
    request_id = submit(http, api, json={"x": 2})
    assert result(http, api, request_id)["status"] == "completed"

    def traced_handler() -> Span | None:
        return next(
            (
                s
                for s in receiver.spans()
                if s.name == "handler" and s.attributes.get("cortado.request_id") == request_id
            ),
            None,
        )

    handler = eventually(traced_handler, 30, interval=0.5)
    spans = eventually(lambda: _complete_trace(receiver, handler.trace_id), 30, interval=0.5)
    roots = [s for s in spans if not s.parent_id or s.parent_id not in {x.span_id for x in spans}]
    assert [r.service for r in roots] == ["cortado-envoy"]


def test_tracing_is_configurable_by_the_standard_sampler_variables(tmp_path: Path) -> None:
    """OTEL_TRACES_SAMPLER=always_off: nothing from the services reaches the receiver."""
    with OtlpReceiver() as receiver:
        env = {
            **MESH_ENV,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_TRACES_SAMPLER": "always_off",
        }
        with LocalMesh(tmp_path / "mesh", env=env) as mesh, SchedulerClient(mesh.scheduler_address) as scheduler:
            scheduler.deploy(write_project(tmp_path, "quiet", HANDLER))
            wait_ready(scheduler, "quiet")
            with httpx.Client(base_url=mesh.http_url, timeout=30) as http:
                assert result(http, "quiet", submit(http, "quiet", json={}))["status"] == "completed"
            # Envoy is not governed by these variables: its span proves the export path works here.
            eventually(lambda: any(s.service == "cortado-envoy" for s in receiver.spans()), 30, interval=0.5)
        # Stopping the mesh flushed every service's exporter: whatever they recorded has arrived.
        assert [s for s in receiver.spans() if s.service != "cortado-envoy"] == []
