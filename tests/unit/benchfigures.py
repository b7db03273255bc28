"""Made-up benchmark figures the benchmark's tests judge and print: one side's run, bulk and Celery sides, measured
CPU."""

from __future__ import annotations

from typing import Any

from cortado.v1 import records_pb2

DONE = records_pb2.REQUEST_STATUS_COMPLETED


def side(rps: float, p50: float, p99: float, rss: float) -> dict[str, Any]:
    def run() -> dict[str, float]:
        return {"requests_per_second": rps, "p50_ms": p50, "p90_ms": p50, "p99_ms": p99}

    return {"throughput": run(), "latency": run(), "slow": run(), "idle_memory": {"rss_mb": rss, "pss_mb": rss}}


def bulk_side(rps: float, bulk: float, batch: float | None = None, at_executor: float | None = None) -> dict[str, Any]:
    """A side with a bulk run (and a batch feed, end to end and at the executor, when given)."""
    figures = side(rps, 4, 12, 300)
    figures["bulk"] = {"requests_per_second": bulk, "server_cpu_ms_per_request": 2.0}
    if batch is not None:
        figures["batch"] = {"requests_per_second": batch, "mean_batch_size": 40.0}
    if at_executor is not None:
        figures["batch_executor"] = {"requests_per_second": at_executor, "mean_batch_size": 64.0}
    return figures


def celery_bulk(variants: dict[str, float]) -> dict[str, Any]:
    """Celery's side with bulk runs of these variants (name: tasks/s); `bulk` is the fastest, as celery_side does."""
    figures = side(400, 5, 20, 150)
    figures["bulk_variants"] = {
        name: {"requests": 2000, "requests_per_second": rate, "variant": name} for name, rate in variants.items()
    }
    figures["bulk"] = max(figures["bulk_variants"].values(), key=lambda v: v["requests_per_second"])
    return figures


def measured_side(rps: float, by_process: dict[str, float], messages: float | None = None) -> dict[str, Any]:
    """A side whose throughput run has CPU per request by process (and NATS messages per request)."""
    figures = side(rps, 4, 12, 300)
    figures["throughput"]["cpu_ms_per_request_by_process"] = by_process
    figures["throughput"]["server_cpu_ms_per_request"] = sum(by_process.values())
    if messages is not None:
        figures["throughput"]["nats_msgs_per_request"] = {"in": messages / 2, "out": messages / 2, "total": messages}
    return figures


CORTADO_CPU = {
    "nats": 1.2,
    "scheduler": 0.1,
    "ingest": 1.0,
    "results": 1.5,
    "executor": 1.4,
    "executor1": 0.6,
    "envoy": 0.8,
}


FLOOR_CPU = {"nats": 0.5, "ingest": 0.5, "results": 0.6, "worker": 0.2, "envoy": 0.4}


CELERY_CPU = {"redis": 0.4, "celery worker": 2.0}


def with_one_call(figures: dict[str, Any], rps: float, p50: float, messages: float) -> dict[str, Any]:
    """A side with a one-call run (throughput and sequential p50) and NATS messages per two-call request."""
    figures["one_call"] = {"requests_per_second": rps}
    figures["one_call_latency"] = {"p50_ms": p50}
    figures["throughput"]["nats_msgs_per_request"] = {"in": messages / 2, "out": messages / 2, "total": messages}
    return figures
