"""Cortado's side: a fresh local mesh as it ships, measured through Envoy over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from bench.measure import Workloads, memory, run_figures, with_cpu
from cortado.client import SchedulerClient
from cortado.mesh import LocalMesh
from cortado.v1 import control_pb2

HERE = Path(__file__).resolve().parent
NOOP = "bench-noop"
SLOW = "bench-sleep10"
PROJECTS = {NOOP: HERE / "noop", SLOW: HERE / "sleep10"}
JSON = {"Content-Type": "application/json"}
PAYLOAD = b'{"x":1}'
WAIT_SECONDS = 30
"""`?wait=` of each fetch: the longest a fetch waits for the result."""


def _session(base_url: str, connections: int) -> aiohttp.ClientSession:
    # One keep-alive connection per client, as separate HTTP clients would have.
    connector = aiohttp.TCPConnector(limit=connections)
    return aiohttp.ClientSession(base_url=base_url, connector=connector, timeout=aiohttp.ClientTimeout(total=120))


async def round_trip(client: aiohttp.ClientSession, api: str) -> tuple[float, int]:
    """Submit one request and fetch its result (long-polling with `?wait=`); seconds it took, and the fetches."""
    started = time.perf_counter()
    async with client.post(f"/{api}", data=PAYLOAD, headers=JSON) as reply:
        reply.raise_for_status()
        request_id = (await reply.json())["id"]
    fetches = 0
    while True:
        fetches += 1
        async with client.get(f"/{api}/{request_id}", params={"wait": str(WAIT_SECONDS)}) as got:
            got.raise_for_status()
            body = await got.json()
        if body["status"] == "completed":
            return time.perf_counter() - started, fetches
        if body["status"] == "failed":
            raise RuntimeError(f"request {request_id} failed: {body}")


def _figures(timings: list[tuple[float, int]], seconds: float, concurrency: int) -> dict[str, Any]:
    figures = run_figures([t for t, _ in timings], seconds, concurrency)
    # A fetch that returns without the result means a whole ?wait= ran out first: worth seeing on its own.
    figures["expired_waits"] = sum(1 for _, fetches in timings if fetches > 1)
    return figures


async def concurrent_run(base_url: str, api: str, requests: int, concurrency: int) -> dict[str, Any]:
    """`requests` round trips from `concurrency` clients at once, until every result is fetched."""
    remaining = iter(range(requests))
    timings: list[tuple[float, int]] = []

    async def client_loop(client: aiohttp.ClientSession) -> None:
        for _ in remaining:
            timings.append(await round_trip(client, api))

    async with _session(base_url, concurrency) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return _figures(timings, elapsed, concurrency)


async def sequential_run(base_url: str, api: str, requests: int) -> dict[str, Any]:
    """`requests` round trips one after the other, from one client."""
    async with _session(base_url, 1) as client:
        started = time.perf_counter()
        timings = [await round_trip(client, api) for _ in range(requests)]
        elapsed = time.perf_counter() - started
    return _figures(timings, elapsed, 1)


def _run_async(coro: Any) -> dict[str, Any]:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result: dict[str, Any] = runner.run(coro)
        return result


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


def mesh_memory(mesh: LocalMesh) -> dict[str, Any]:
    """Memory of every process of the mesh: NATS, Envoy, the services, and the executor's handler processes."""
    return memory({name: proc.pid for name, proc in mesh.processes.items() if proc.alive()})


@contextlib.contextmanager
def started_mesh() -> Iterator[LocalMesh]:
    """A fresh mesh in a temporary folder, exactly as `make run` configures it."""
    with tempfile.TemporaryDirectory(prefix="cortado-bench-") as tmp, LocalMesh(Path(tmp)) as mesh:
        yield mesh


def run(workloads: Workloads, progress: Any = print) -> dict[str, Any]:
    """Every workload on a fresh mesh; the figures."""
    figures: dict[str, Any] = {"system": "cortado"}
    progress("cortado: starting the mesh (NATS, scheduler, ingest, results, executor, Envoy)")
    with started_mesh() as mesh:
        url = mesh.http_url

        def pids() -> dict[str, int]:
            return {name: proc.pid for name, proc in mesh.processes.items()}

        def measured(api: str, requests: int, concurrency: int) -> dict[str, Any]:
            if concurrency == 1:
                return with_cpu(lambda: _run_async(sequential_run(url, api, requests)), pids)
            return with_cpu(lambda: _run_async(concurrent_run(url, api, requests, concurrency)), pids)

        deploy(mesh, NOOP)
        _run_async(concurrent_run(url, NOOP, workloads.warmup, min(4, workloads.concurrency)))
        progress(f"cortado: throughput, {workloads.requests} no-op requests from {workloads.concurrency} clients")
        figures["throughput"] = measured(NOOP, workloads.requests, workloads.concurrency)
        progress(f"cortado: latency, {workloads.sequential} sequential round trips")
        figures["latency"] = measured(NOOP, workloads.sequential, 1)
        time.sleep(workloads.idle_seconds)
        figures["idle_memory"] = mesh_memory(mesh)
        progress(f"cortado: 10 ms handler (max_concurrency 8), {workloads.slow_requests} requests")
        deploy(mesh, SLOW)
        _run_async(concurrent_run(url, SLOW, workloads.warmup, min(4, workloads.slow_concurrency)))
        figures["slow"] = measured(SLOW, workloads.slow_requests, workloads.slow_concurrency)
    return figures
