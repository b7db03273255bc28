"""The benchmark's floor (bench/floor/) starts, serves both call shapes, and is measured: it must not rot."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

from bench.floor import side
from bench.floor.rig import API, started_floor
from bench.measure import Workloads

pytestmark = pytest.mark.integration

TINY = Workloads(requests=50, concurrency=4, sequential=10, warmup=4, idle_seconds=0.0)


def _post(url: str) -> dict[str, Any]:
    request = urllib.request.Request(url, data=b'{"x":1}', headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as reply:
        body: dict[str, Any] = json.loads(reply.read())
    return body


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as reply:
        body: dict[str, Any] = json.loads(reply.read())
    return body


@pytest.mark.timeout(60)
def test_floor_answers_both_call_shapes() -> None:
    with started_floor() as rig:
        base = f"{rig.http_url}/{API}"
        submitted = _post(base)
        assert set(submitted) == {"id"}
        assert _get(f"{base}/{submitted['id']}?wait=5") == {
            "id": submitted["id"],
            "status": "completed",
            "result": {"ok": True},
        }
        one_call = _post(f"{base}?wait=5")
        assert one_call["status"] == "completed"
        assert _get(f"{base}/{'0' * 32}?wait=0.2") == {"id": "0" * 32, "status": "pending"}
        pids = rig.pids()
        assert set(pids) == {"nats", "ingest", "results", "worker", "envoy"}
    assert not any(proc.alive() for proc in rig.processes.values())


@pytest.mark.timeout(90)
def test_floor_side_measures_every_run() -> None:
    figures = side.run(TINY, progress=lambda message: None)
    assert figures["throughput"]["requests"] == TINY.requests
    assert figures["latency"]["requests"] == TINY.sequential
    assert figures["one_call"]["requests"] == TINY.requests
    for run in ("throughput", "latency", "one_call"):
        assert figures[run]["requests_per_second"] > 0
        assert figures[run]["expired_waits"] == 0
        assert set(figures[run]["cpu_ms_per_request_by_process"]) == {"nats", "ingest", "results", "worker", "envoy"}
        messages = figures[run]["nats_msgs_per_request"]
        # At least: the publish and its ack, the worker's delivery, its bucket write and ack, its ack, the watch.
        assert messages["in"] >= 3 and messages["out"] >= 3, messages
        assert messages["total"] == pytest.approx(messages["in"] + messages["out"], abs=0.02)
    assert figures["idle_memory"]["processes"] == 5
