"""Serving metrics: the Prometheus endpoint of a service, gRPC and NATS client metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
from nats.aio.client import Client
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from cortado.metrics import LATENCY_BUCKETS

log = logging.getLogger(__name__)

GRPC_HANDLED = Counter(
    "cortado_grpc_server_handled", "gRPC calls a service answered, by method and status code.", ["method", "code"]
)
GRPC_SECONDS = Histogram(
    "cortado_grpc_server_handling_seconds",
    "Time a service took to answer gRPC calls.",
    ["method"],
    buckets=LATENCY_BUCKETS,
)


def serve_metrics(address: str, multiprocess_dir: Path | None = None) -> int:
    """Serve Prometheus metrics on address (host:port; empty: nowhere); returns the port.

    With multiprocess_dir, the metrics its handler processes write there are served too, summed.
    """
    if not address:
        return 0
    host, _, port = address.rpartition(":")
    registry: CollectorRegistry = REGISTRY
    if multiprocess_dir is not None:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(multiprocess_dir))  # type: ignore[no-untyped-call]
        registry.register(_Forward(REGISTRY))
    server, _ = start_http_server(int(port), addr=host or "0.0.0.0", registry=registry)
    return int(server.server_port)


class _Forward(Collector):
    """Everything another registry collects (the process's own metrics beside its children's)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self._registry.collect()


class NatsClientCollector(Collector):
    """The NATS connection's own counters: messages and bytes in and out, reconnects."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc

    def collect(self) -> Iterator[Metric]:
        stats = self._nc.stats
        messages = CounterMetricFamily(
            "cortado_nats_client_messages", "Messages this process sent to or received from NATS.", labels=["direction"]
        )
        messages.add_metric(["in"], float(stats.get("in_msgs", 0)))
        messages.add_metric(["out"], float(stats.get("out_msgs", 0)))
        data = CounterMetricFamily(
            "cortado_nats_client_bytes", "Bytes this process sent to or received from NATS.", labels=["direction"]
        )
        data.add_metric(["in"], float(stats.get("in_bytes", 0)))
        data.add_metric(["out"], float(stats.get("out_bytes", 0)))
        reconnects = CounterMetricFamily("cortado_nats_client_reconnects", "Reconnections to NATS.")
        reconnects.add_metric([], float(stats.get("reconnects", 0)))
        yield from (messages, data, reconnects)


def watch_nats(nc: Client) -> None:
    """Expose the connection's counters in this process's metrics."""
    REGISTRY.register(NatsClientCollector(nc))


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts and times every unary gRPC call a service answers (streams are counted when they end)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        async def timed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            code = "OK"
            try:
                return await inner(request, context)
            except BaseException:
                code = _code_name(context, "UNKNOWN")
                raise
            finally:
                if code == "OK":
                    code = _code_name(context, "OK")
                GRPC_HANDLED.labels(method, code).inc()
                GRPC_SECONDS.labels(method).observe(time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(
            timed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _code_name(context: grpc.aio.ServicerContext, default: str) -> str:
    try:
        code = context.code()
    except Exception:
        return default
    if code is None:
        return default
    return str(getattr(code, "name", code))


async def connect_observed(nats_url: str, name: str, metrics_address: str) -> Client:
    """Connect a service to NATS and serve its metrics (the connection's counters included)."""
    from cortado.natsutil import connect

    nc = await connect(nats_url, name)
    watch_nats(nc)
    serve_metrics(metrics_address)
    return nc
