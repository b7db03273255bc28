"""`python -m bench`: Cortado's throughput and latency through Envoy, on a fresh local mesh.

Prints a table and writes the figures as JSON (`--json`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from cortado.client import SchedulerClient
from cortado.mesh import LocalMesh

HERE = Path(__file__).resolve().parent
JSON = {"Content-Type": "application/json"}


def _session(base_url: str, connections: int) -> aiohttp.ClientSession:
    # One keep-alive connection per client, as separate HTTP clients would have.
    connector = aiohttp.TCPConnector(limit=connections)
    return aiohttp.ClientSession(base_url=base_url, connector=connector, timeout=aiohttp.ClientTimeout(total=120))


async def _round_trip(client: aiohttp.ClientSession, api: str) -> float:
    started = time.perf_counter()
    async with client.post(f"/{api}", data=b'{"x":1}', headers=JSON) as reply:
        reply.raise_for_status()
        request_id = (await reply.json())["id"]
    while True:
        async with client.get(f"/{api}/{request_id}", params={"wait": "30"}) as got:
            got.raise_for_status()
            body = await got.json()
        if body["status"] == "completed":
            return time.perf_counter() - started
        if body["status"] == "failed":
            raise RuntimeError(str(body))


async def throughput(base_url: str, api: str, requests: int, concurrency: int) -> dict[str, Any]:
    """`requests` submit-to-result round trips from `concurrency` clients; rate and latency percentiles."""
    remaining = iter(range(requests))
    latencies: list[float] = []

    async def client_loop(client: aiohttp.ClientSession) -> None:
        for _ in remaining:
            latencies.append(await _round_trip(client, api))

    async with _session(base_url, concurrency) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "concurrency": concurrency,
        "seconds": round(elapsed, 3),
        "requests_per_second": round(len(latencies) / elapsed, 1),
        **percentiles(latencies),
    }


async def sequential(base_url: str, api: str, requests: int) -> dict[str, Any]:
    """`requests` sequential round trips; latency percentiles."""
    async with _session(base_url, 1) as client:
        latencies = [await _round_trip(client, api) for _ in range(requests)]
    return {"requests": requests, **percentiles(latencies)}


def percentiles(latencies: list[float]) -> dict[str, float]:
    """p50, p90 and p99 in milliseconds."""
    if len(latencies) < 2:
        return {"p50_ms": round(latencies[0] * 1000, 2) if latencies else 0.0, "p90_ms": 0.0, "p99_ms": 0.0}
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "p50_ms": round(cuts[49] * 1000, 2),
        "p90_ms": round(cuts[89] * 1000, 2),
        "p99_ms": round(cuts[98] * 1000, 2),
    }


def run(requests: int, concurrency: int, sequential_requests: int) -> dict[str, Any]:
    """Start a mesh, deploy the no-op API, measure, stop."""
    with tempfile.TemporaryDirectory(prefix="cortado-bench-") as tmp, LocalMesh(Path(tmp)) as mesh:
        with SchedulerClient(mesh.scheduler_address) as scheduler:
            scheduler.deploy(HERE / "noop")
            deadline = time.monotonic() + 60
            while not scheduler.describe("bench-noop").ready_replicas:
                if time.monotonic() > deadline:
                    raise RuntimeError("the benchmark API did not become ready")
                time.sleep(0.1)
        # Warm the connections and the handler process.
        asyncio.run(throughput(mesh.http_url, "bench-noop", min(50, requests), min(4, concurrency)))
        return {
            "system": "cortado",
            "throughput": asyncio.run(throughput(mesh.http_url, "bench-noop", requests, concurrency)),
            "latency": asyncio.run(sequential(mesh.http_url, "bench-noop", sequential_requests)),
        }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000, help="round trips in the throughput run")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent HTTP clients")
    parser.add_argument("--sequential", type=int, default=200, help="round trips in the latency run")
    parser.add_argument("--json", type=Path, help="write the figures here")
    options = parser.parse_args(argv)
    figures = run(options.requests, options.concurrency, options.sequential)
    t, lat = figures["throughput"], figures["latency"]
    print(f"{'workload':<44} {'cortado':>12}")
    print(f"{'throughput, no-op (req/s)':<44} {t['requests_per_second']:>12}")
    print(f"{'  ' + str(t['requests']) + ' requests, ' + str(t['concurrency']) + ' clients, p50 ms':<44} {t['p50_ms']:>12}")
    print(f"{'sequential round trip p50 ms':<44} {lat['p50_ms']:>12}")
    print(f"{'sequential round trip p90 ms':<44} {lat['p90_ms']:>12}")
    print(f"{'sequential round trip p99 ms':<44} {lat['p99_ms']:>12}")
    if options.json:
        options.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
