"""Cortado's side: a fresh local mesh as it ships, measured through Envoy: over HTTP, and over the bulk gRPC streams
(SubmitStream, WatchMany) for the bulk and batch feed runs."""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.http_client import Trip, concurrent_run, measured_run, one_call, round_trip, run_async, supports_one_call
from bench.measure import Workloads, memory, with_cpu
from bench.streams import bulk_run, executor_drain
from cortado.client import SchedulerClient
from cortado.mesh import LocalMesh
from cortado.v1 import control_pb2

HERE = Path(__file__).resolve().parent
NOOP = "bench-noop"
SLOW = "bench-sleep10"
BATCH = "bench-batch"
PROJECTS = {NOOP: HERE / "noop", SLOW: HERE / "sleep10", BATCH: HERE / "batch"}


def deploy(mesh: LocalMesh, api: str, timeout: float = 120.0) -> None:
    """Deploy one of the benchmark's APIs and wait until it has a ready replica."""
    with SchedulerClient(mesh.scheduler_address) as scheduler:
        scheduler.deploy(PROJECTS[api])
        deadline = time.monotonic() + timeout
        while True:
            status = scheduler.describe(api)
            if status.ready_replicas:
                return
            if status.state in (control_pb2.API_STATE_FAILED, control_pb2.API_STATE_UNPLACEABLE):
                raise RuntimeError(f"{api} did not start: {status.message}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{api} was not ready after {timeout:.0f}s")
            time.sleep(0.1)


def ready_replicas(mesh: LocalMesh, api: str) -> int:
    """How many replicas of the API are ready now (the autoscaler may have added some under load)."""
    with SchedulerClient(mesh.scheduler_address) as scheduler:
        return int(scheduler.describe(api).ready_replicas)


def mesh_memory(mesh: LocalMesh) -> dict[str, Any]:
    """Memory of every process of the mesh: NATS, Envoy, the services, and the executor's handler processes."""
    return memory({name: proc.pid for name, proc in mesh.processes.items() if proc.alive()})


@contextlib.contextmanager
def started_mesh() -> Iterator[LocalMesh]:
    """A fresh mesh in a temporary folder, as `make run` configures it, with NATS's monitoring endpoint on."""
    # Where serving the endpoint is an option of the mesh, ask for it (elsewhere it is always served).
    options: dict[str, Any] = {"nats_monitoring": True} if "nats_monitoring" in _mesh_fields() else {}
    with tempfile.TemporaryDirectory(prefix="cortado-bench-") as tmp, LocalMesh(Path(tmp), **options) as mesh:
        yield mesh


def _mesh_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(LocalMesh)}


def nats_varz_url(mesh: LocalMesh) -> str | None:
    """URL of the mesh's NATS `/varz` (message counters), or None where its monitoring endpoint is off."""
    port = mesh.ports.get("nats-monitor")
    return None if port is None else f"http://127.0.0.1:{port}/varz"


def run(workloads: Workloads, progress: Any = print) -> dict[str, Any]:
    """Every workload on a fresh mesh; the figures."""
    figures: dict[str, Any] = {"system": "cortado"}
    progress("cortado: starting the mesh (NATS, scheduler, ingest, results, executor, webhooks, Envoy)")
    with started_mesh() as mesh:
        url = mesh.http_url
        varz = nats_varz_url(mesh)
        if varz is None:
            progress("cortado: NATS's monitoring endpoint is off: no NATS messages per request")

        def pids() -> dict[str, int]:
            return {name: proc.pid for name, proc in mesh.processes.items()}

        def measured(api: str, requests: int, concurrency: int, trip: Trip = round_trip) -> dict[str, Any]:
            return with_cpu(measured_run(url, api, requests, concurrency, trip), pids, varz)

        deploy(mesh, NOOP)
        run_async(concurrent_run(url, NOOP, workloads.warmup, min(4, workloads.concurrency)))
        progress(f"cortado: throughput, {workloads.requests} no-op requests from {workloads.concurrency} clients")
        figures["throughput"] = measured(NOOP, workloads.requests, workloads.concurrency)
        progress(f"cortado: latency, {workloads.sequential} sequential round trips")
        figures["latency"] = measured(NOOP, workloads.sequential, 1)
        figures["one_call_available"] = run_async(supports_one_call(url, NOOP))
        if figures["one_call_available"]:
            progress(f"cortado: one-call throughput (POST ?wait=), {workloads.requests} no-op requests")
            figures["one_call"] = measured(NOOP, workloads.requests, workloads.concurrency, trip=one_call)
            progress(f"cortado: one-call latency (POST ?wait=), {workloads.sequential} sequential round trips")
            figures["one_call_latency"] = measured(NOOP, workloads.sequential, 1, trip=one_call)
        else:
            progress("cortado: POST ?wait= answers only an id: no one-call run")
        time.sleep(workloads.idle_seconds)
        figures["idle_memory"] = mesh_memory(mesh)
        address = mesh.grpc_address
        progress(f"cortado: bulk, {workloads.bulk_requests} no-op requests over SubmitStream piped into WatchMany")
        bulk_run(address, NOOP, workloads.warmup)
        figures["bulk"] = with_cpu(lambda: bulk_run(address, NOOP, workloads.bulk_requests), pids, varz)
        figures["bulk"]["replicas"] = ready_replicas(mesh, NOOP)
        progress(f"cortado: 10 ms handler (max_concurrency 8), {workloads.slow_requests} requests")
        deploy(mesh, SLOW)
        run_async(concurrent_run(url, SLOW, workloads.warmup, min(4, workloads.slow_concurrency)))
        figures["slow"] = measured(SLOW, workloads.slow_requests, workloads.slow_concurrency)
        progress(f"cortado: batch feed (64 per batch), {workloads.batch_requests} requests over SubmitStream")
        deploy(mesh, BATCH)
        bulk_run(address, BATCH, workloads.warmup)
        figures["batch"] = with_cpu(lambda: bulk_run(address, BATCH, workloads.batch_requests), pids, varz)
        progress(f"cortado: batch feed at the executor, {workloads.batch_requests} requests queued, then drained")
        figures["batch_executor"] = run_async(
            executor_drain(mesh.admin_nats_url, address, BATCH, workloads.batch_requests)
        )
    return figures
