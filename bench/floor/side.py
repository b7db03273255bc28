"""The floor's side of `python -m bench`: the no-op workloads, with the same client as Cortado's side."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.floor.rig import API, started_floor
from bench.http_client import Trip, concurrent_run, measured_run, one_call, round_trip, run_async
from bench.measure import Workloads, memory, with_cpu


def run(workloads: Workloads, progress: Callable[[str], object] = print) -> dict[str, Any]:
    """Two-call throughput, sequential latency and one-call throughput on a fresh floor; the figures.

    The 10 ms handler is not run here: the floor has no handler processes to compare.
    """
    figures: dict[str, Any] = {"system": "floor"}
    progress("floor: starting NATS, ingest, results, one worker and Envoy")
    with started_floor() as rig:
        url = rig.http_url

        def measured(requests: int, concurrency: int, trip: Trip = round_trip) -> dict[str, Any]:
            return with_cpu(measured_run(url, API, requests, concurrency, trip), rig.pids, rig.varz_url)

        run_async(concurrent_run(url, API, workloads.warmup, min(4, workloads.concurrency)))
        progress(f"floor: throughput, {workloads.requests} no-op requests from {workloads.concurrency} clients")
        figures["throughput"] = measured(workloads.requests, workloads.concurrency)
        progress(f"floor: latency, {workloads.sequential} sequential round trips")
        figures["latency"] = measured(workloads.sequential, 1)
        progress(f"floor: one-call throughput (POST ?wait=), {workloads.requests} no-op requests")
        figures["one_call_available"] = True
        figures["one_call"] = measured(workloads.requests, workloads.concurrency, one_call)
        progress(f"floor: one-call latency (POST ?wait=), {workloads.sequential} sequential round trips")
        figures["one_call_latency"] = measured(workloads.sequential, 1, one_call)
        time.sleep(workloads.idle_seconds)
        figures["idle_memory"] = memory(rig.pids())
    return figures
