"""The benchmark's runs (`make bench`): bulk runs, Celery, the floor's Envoy, Redis, the command line, and a short
run (Cortado and the floor) that checks its output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from bench import streams
from bench.__main__ import describe, parse, workloads_for
from bench.floor.rig import render_envoy_config
from bench.measure import Workloads
from cortado.client import Client
from cortado.v1 import public_pb2, records_pb2
from tests.unit.benchfigures import DONE

ROOT = Path(__file__).resolve().parents[2]


class _Cancelled(grpc.RpcError):  # type: ignore[misc]
    """What a stream raises once its channel is closed."""


class _StallingClient:
    """Client's bulk streams, in memory: WatchMany answers every id but the last, then waits until closed."""

    instances: list[_StallingClient] = []
    request = staticmethod(Client.request)

    def __init__(self, address: str) -> None:
        self.closed = threading.Event()
        _StallingClient.instances.append(self)

    def __enter__(self) -> _StallingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.closed.set()

    def submit_many(self, requests: Iterator[Any], timeout: float | None = None) -> Iterator[Any]:
        for n, _ in enumerate(requests):
            yield public_pb2.SubmitStreamResponse(id=f"{n:032x}")

    def results(self, api: str, ids: Iterator[str], timeout: float | None = None) -> Iterator[Any]:
        followed = list(ids)
        for request_id in followed[:-1]:
            result = json.dumps({"ok": True, "batch_size": 2}).encode()
            yield records_pb2.RequestView(id=request_id, status=DONE, result_json=result)
        if not self.closed.wait(10):
            raise AssertionError("the bulk run did not stop waiting")
        raise _Cancelled()

    def get(self, api: str, request_id: str) -> records_pb2.RequestView:
        return records_pb2.RequestView(id=request_id, status=DONE)


def test_a_bulk_run_stops_waiting_for_answers_watch_many_never_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams, "Client", _StallingClient)
    figures = streams.bulk_run("nowhere:1", "api", 5, stall=0.3)
    assert figures["requests"] == 4  # what WatchMany answered
    assert figures["mean_batch_size"] == 2.0
    assert figures["unanswered"] == {"requests": 1, "status": {"REQUEST_STATUS_COMPLETED": 1}}
    assert figures["seconds"] < 0.3  # up to the last answer, not the wait that followed
    assert _StallingClient.instances[0].closed.is_set()


def test_celery_sends_everything_with_its_fastest_bulk_api(monkeypatch: pytest.MonkeyPatch) -> None:
    celery_side = pytest.importorskip("bench.celery_side")
    assert set(celery_side.BULK_RUNS) == {"group", "chunks", "apply_async"}
    sent: list[tuple[str, int]] = []

    def fake(name: str, rate: float) -> Any:
        def bulk(task: Any, requests: int) -> dict[str, Any]:
            sent.append((name, requests))
            return streams.rate_figures(requests, requests / rate, variant=name)

        return bulk

    monkeypatch.setattr(celery_side, "BULK_RUNS", {"group": fake("group", 400), "chunks": fake("chunks", 3000)})
    best, tries = celery_side.bulk_run(object(), 50_000, 10, lambda: {"me": os.getpid()}, progress=lambda m: None)
    # Each API is warmed up and tried on BULK_PROBE tasks; only the fastest sends the whole count.
    probe = celery_side.BULK_PROBE
    assert sent == [("group", 10), ("group", probe), ("chunks", 10), ("chunks", probe), ("chunks", 50_000)]
    assert (best["variant"], best["requests"], best["requests_per_second"]) == ("chunks", 50_000, 3000.0)
    assert "server_cpu_ms_per_request" in best
    assert {name: t["requests"] for name, t in tries.items()} == {"group": probe, "chunks": probe}
    sent.clear()
    best, _ = celery_side.bulk_run(object(), 300, 10, lambda: {"me": os.getpid()}, progress=lambda m: None)
    assert sent == [("group", 10), ("group", 300), ("chunks", 10), ("chunks", 300)]  # the try was the whole count
    assert celery_side.fastest({"a": {"requests_per_second": 1.0}, "b": {"requests_per_second": 2.5}}) == "b"
    with pytest.raises(RuntimeError, match="2 results came back for 3 tasks"):
        celery_side._counted([1, 2], 3)


def test_floor_envoy_config_routes_by_method_and_wait(tmp_path: Path) -> None:
    config = yaml.safe_load(render_envoy_config(8080, 9901, tmp_path / "floor.pb", "127.0.0.1:1", "127.0.0.1:2"))
    listener = config["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 8080}
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    routes = manager["route_config"]["virtual_hosts"][0]["routes"]
    # POST with ?wait= goes to results (publish and wait), a plain POST to ingest, GET to results.
    assert [r["route"]["cluster"] for r in routes] == ["results", "ingest", "results"]
    assert routes[0]["match"]["query_parameters"] == [{"name": "wait", "present_match": True}]
    assert "query_parameters" not in routes[1]["match"]
    transcoder = manager["http_filters"][0]["typed_config"]
    assert transcoder["proto_descriptor"] == str(tmp_path / "floor.pb")
    assert transcoder["match_incoming_request_route"] is True
    assert transcoder["services"] == ["benchfloor.Floor"]
    assert [f["name"] for f in manager["http_filters"]] == [
        "envoy.filters.http.grpc_json_transcoder",
        "envoy.filters.http.router",
    ]
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    endpoint = clusters["results"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 2}


def test_command_line_sizes() -> None:
    assert workloads_for(parse([])) == Workloads()
    assert workloads_for(parse(["--quick"])) == Workloads.quick()
    assert (Workloads().bulk_requests, Workloads().batch_requests) == (50_000, 20_000)
    assert Workloads.quick().bulk_requests <= 500 and Workloads.quick().batch_requests <= 500
    sized = workloads_for(parse(["--quick", "--bulk-requests", "40", "--batch-requests", "30"]))
    assert (sized.bulk_requests, sized.batch_requests, sized.requests) == (40, 30, Workloads.quick().requests)
    with pytest.raises(SystemExit):
        workloads_for(parse(["--bulk-requests", "0"]))
    chosen = workloads_for(parse(["--requests", "10", "--concurrency", "2"]))
    assert (chosen.requests, chosen.concurrency, chosen.slow_concurrency) == (10, 2, 2)
    with pytest.raises(SystemExit):
        workloads_for(parse(["--sequential", "0"]))
    assert parse(["--no-floor"]).no_floor and not parse([]).no_floor


def test_describe_names_the_sides() -> None:
    on = {"cpus": 2, "load_average_at_start": [0.1, 0.2, 0.3], "load_average_at_end": [1.0, 1.0, 1.0]}
    assert describe(Workloads(), True, on).startswith("Cortado, the floor, Celery on 2 CPUs")
    assert describe(Workloads(), False, on, with_floor=False).startswith("Cortado on 2 CPUs")
    assert "one call: 5000 POST ?wait= from 16 clients" in describe(Workloads(), True, on)
    assert "bulk: 50000 no-op requests from one client" in describe(Workloads(), True, on)
    assert "batch feed: 20000 requests" in describe(Workloads(), True, on)


def test_redis_argv_keeps_everything_in_memory(tmp_path: Path) -> None:
    celery_side = pytest.importorskip("bench.celery_side")
    argv = celery_side.redis_argv("redis-server", 6400, tmp_path)
    assert argv[argv.index("--save") + 1] == ""
    assert argv[argv.index("--appendonly") + 1] == "no"
    assert argv[argv.index("--bind") + 1] == "127.0.0.1"
    worker = celery_side.worker_argv(8)
    assert worker[worker.index("--pool") + 1] == "prefork"
    assert worker[worker.index("--concurrency") + 1] == "8"


def test_missing_redis_server_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    celery_side = pytest.importorskip("bench.celery_side")

    def missing(name: str) -> str:
        raise celery_side.MeshError(f"{name} is not installed")

    monkeypatch.setattr(celery_side, "find_binary", missing)
    with pytest.raises(celery_side.RedisUnavailableError, match="redis-server is not installed"):
        celery_side.redis_server_binary(install=False)
    monkeypatch.setattr(celery_side, "find_binary", lambda name: f"/opt/{name}")
    assert celery_side.redis_server_binary(install=False) == "/opt/redis-server"


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_quick_run_writes_well_formed_figures(tmp_path: Path) -> None:
    """`python -m bench --quick` starts its own mesh, measures, and writes the figures; never judged on speed."""
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sequential round trip p99 (ms)" in done.stdout
    assert "cortado/floor" in done.stdout
    for label in ("bulk, one client: throughput (req/s)", "batch feed at the executor (req/s)", "bulk run: CPU"):
        assert label in done.stdout, label
    figures = json.loads(out.read_text())
    assert set(figures) == {
        "machine",
        "workloads",
        "cortado",
        "floor",
        "celery",
        "ratios",
        "ratios_to_floor",
        "targets",
    }
    assert figures["celery"] is None
    cortado = figures["cortado"]
    quick = Workloads.quick()
    floor = figures["floor"]
    for run in ("throughput", "latency", "one_call", "one_call_latency"):
        assert floor[run]["requests"] == (quick.sequential if "latency" in run else quick.requests)
        assert floor[run]["nats_msgs_per_request"]["total"] > 0
    assert figures["ratios_to_floor"]["throughput"] > 0
    assert figures["ratios_to_floor"]["nats_msgs_per_request"] > 0
    assert isinstance(cortado["one_call_available"], bool)
    assert cortado["throughput"]["requests"] == quick.requests
    assert cortado["latency"]["requests"] == quick.sequential
    assert cortado["slow"]["requests"] == quick.slow_requests
    for run in ("throughput", "latency", "slow"):
        keys = ("requests_per_second", "p50_ms", "p90_ms", "p99_ms", "max_ms", "seconds")
        for key in (*keys, "server_cpu_ms_per_request", "client_cpu_ms_per_request"):
            assert cortado[run][key] > 0, (run, key)
        assert cortado[run]["nats_msgs_per_request"]["in"] > 0, run
        assert cortado[run]["nats_msgs_per_request"]["out"] > 0, run
        assert {"nats", "envoy", "ingest", "results", "executor"} <= set(cortado[run]["cpu_ms_per_request_by_process"])
        assert cortado[run]["expired_waits"] >= 0
        assert cortado[run]["p50_ms"] <= cortado[run]["p90_ms"] <= cortado[run]["p99_ms"] <= cortado[run]["max_ms"]
    idle = cortado["idle_memory"]
    assert idle["rss_mb"] > 0 and idle["pss_mb"] > 0
    assert {"nats", "envoy", "scheduler", "ingest", "results", "executor"} <= set(idle["parts"])
    assert idle["parts"]["executor"]["processes"] >= 2  # the executor and its handler process
    bulk, batch, at_executor = cortado["bulk"], cortado["batch"], cortado["batch_executor"]
    assert bulk["requests"] == quick.bulk_requests and bulk["requests_per_second"] > 0
    assert bulk["nats_msgs_per_request"]["total"] > 0 and bulk["replicas"] >= 1
    assert {"nats", "ingest", "results", "executor"} <= set(bulk["cpu_ms_per_request_by_process"])
    assert batch["requests"] == at_executor["requests"] == quick.batch_requests
    assert batch["requests_per_second"] > 0 and at_executor["requests_per_second"] > 0
    for run in (batch, at_executor):
        assert 1 <= run["mean_batch_size"] <= 64
    if cortado["one_call_available"]:
        assert cortado["one_call_latency"]["requests"] == quick.sequential
    marks = [t["mark"] for t in figures["targets"]]
    assert marks[1:5] == ["n/a"] * 4  # each against Celery, which the quick run leaves out
    assert all(mark in ("met", "MISSED") for mark in (marks[0], *marks[5:]))
