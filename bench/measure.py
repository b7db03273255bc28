"""What every side shares: the workloads' sizes, latency percentiles, the memory and CPU of process trees,
and NATS's message counters."""

from __future__ import annotations

import contextlib
import json
import statistics
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import psutil

MIB = 1024 * 1024


@dataclass(frozen=True)
class Workloads:
    """How many requests each workload sends, and from how many concurrent clients."""

    requests: int = 5000
    """No-op round trips in the throughput run."""
    concurrency: int = 16
    """Concurrent clients in the throughput runs."""
    sequential: int = 1000
    """Sequential no-op round trips in the latency run."""
    slow_requests: int = 2000
    """Round trips of the 10 ms handler."""
    slow_concurrency: int = 16
    """Concurrent clients of the 10 ms handler (which runs 8 at once)."""
    bulk_requests: int = 50_000
    """No-op requests of the bulk run (one SubmitStream piped into WatchMany; Celery's bulk APIs)."""
    batch_requests: int = 20_000
    """Requests of the batch feed (a no-op batch handler, 64 per batch), end to end and at the executor."""
    warmup: int = 100
    """Round trips before each measured run, not counted."""
    idle_seconds: float = 2.0
    """Pause before the idle memory is read."""

    @classmethod
    def quick(cls) -> Workloads:
        """A few hundred requests: checks that the benchmark works, in seconds."""
        return cls(
            requests=300,
            concurrency=8,
            sequential=100,
            slow_requests=200,
            bulk_requests=500,
            batch_requests=500,
            warmup=20,
            idle_seconds=0.5,
        )

    def as_dict(self) -> dict[str, Any]:
        """The sizes, for the JSON figures."""
        return asdict(self)


def percentiles(latencies: Iterable[float]) -> dict[str, float]:
    """p50, p90, p99 and max of latencies given in seconds, in milliseconds (rounded to 0.01 ms)."""
    samples = sorted(latencies)
    if not samples:
        raise ValueError("no latencies to summarize")
    if len(samples) == 1:
        p50 = p90 = p99 = samples[0]
    else:
        cuts = statistics.quantiles(samples, n=100, method="inclusive")
        p50, p90, p99 = cuts[49], cuts[89], cuts[98]
    return {
        "p50_ms": round(p50 * 1000, 2),
        "p90_ms": round(p90 * 1000, 2),
        "p99_ms": round(p99 * 1000, 2),
        "max_ms": round(samples[-1] * 1000, 2),
    }


def run_figures(latencies: list[float], seconds: float, concurrency: int) -> dict[str, Any]:
    """The figures of one measured run: count, rate and latency percentiles."""
    if seconds <= 0:
        raise ValueError(f"a run cannot take {seconds} s")
    return {
        "requests": len(latencies),
        "concurrency": concurrency,
        "seconds": round(seconds, 3),
        "requests_per_second": round(len(latencies) / seconds, 1),
        **percentiles(latencies),
    }


def tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants (those that still run)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def memory(named_pids: dict[str, int]) -> dict[str, Any]:
    """RSS (and PSS, which counts shared pages once) of each named process tree, and their totals, in MB (MiB)."""
    parts: dict[str, dict[str, float]] = {}
    for name, pid in named_pids.items():
        rss = pss = 0
        count = 0
        for proc in tree(pid):
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                info = proc.memory_full_info()
                rss += info.rss
                pss += getattr(info, "pss", info.rss)
                count += 1
        parts[name] = {"processes": count, "rss_mb": round(rss / MIB, 1), "pss_mb": round(pss / MIB, 1)}
    return {
        "processes": sum(int(p["processes"]) for p in parts.values()),
        "rss_mb": round(sum(p["rss_mb"] for p in parts.values()), 1),
        "pss_mb": round(sum(p["pss_mb"] for p in parts.values()), 1),
        "parts": parts,
    }


def cpu_seconds(pid: int) -> float:
    """User and system CPU time used so far by a process tree (processes that already exited are not counted)."""
    total = 0.0
    for proc in tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def nats_messages(varz_url: str) -> dict[str, int]:
    """NATS's message counters so far, from its monitoring endpoint's `/varz`: received (in) and sent (out)."""
    with urllib.request.urlopen(varz_url, timeout=5) as reply:
        varz = json.loads(reply.read())
    return {"in": int(varz["in_msgs"]), "out": int(varz["out_msgs"])}


def per_request(before: dict[str, int], after: dict[str, int], requests: int) -> dict[str, float]:
    """Messages per request between two readings of nats_messages(), and their total (rounded to 0.01)."""
    count = max(1, requests)
    spent = {key: (after[key] - before[key]) / count for key in ("in", "out")}
    return {"in": round(spent["in"], 2), "out": round(spent["out"], 2), "total": round(sum(spent.values()), 2)}


def with_cpu(
    run: Callable[[], dict[str, Any]], server: Callable[[], dict[str, int]], nats_varz: str | None = None
) -> dict[str, Any]:
    """run()'s figures, plus the CPU each request cost the server's processes (by name) and this client process.

    server() names the server's top processes (their descendants count with them). CPU per request
    depends far less than rates do on what else the machine is doing. With nats_varz (the URL of NATS's
    `/varz`), also the messages NATS received and sent per request (`nats_msgs_per_request`); whatever
    else talks to NATS during the run counts too.
    """
    pids = server()
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    messages_before = None if nats_varz is None else nats_messages(nats_varz)
    client_before = time.process_time()
    figures = run()
    client = time.process_time() - client_before
    spent = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    count = max(1, int(figures["requests"]))
    figures["server_cpu_ms_per_request"] = round(sum(spent.values()) * 1000 / count, 3)
    figures["client_cpu_ms_per_request"] = round(client * 1000 / count, 3)
    figures["cpu_ms_per_request_by_process"] = {name: round(s * 1000 / count, 3) for name, s in spent.items()}
    if nats_varz is not None and messages_before is not None:
        figures["nats_msgs_per_request"] = per_request(messages_before, nats_messages(nats_varz), count)
    return figures
