"""Serving metrics: the Prometheus endpoint of a service, gRPC and NATS client metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from nats.aio.client import Client
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from cortado._metrics import LATENCY_BUCKETS

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

    With multiprocess_dir, the metrics its handler processes write there (or in a folder per API below it) are
    served too, summed.
    """
    if not address:
        return 0
    host, _, port = address.rpartition(":")
    registry: CollectorRegistry = REGISTRY
    if multiprocess_dir is not None:
        registry = CollectorRegistry()
        registry.register(_MultiProcessTree(multiprocess_dir))
        registry.register(_Forward(REGISTRY))
    server, _ = start_http_server(int(port), addr=host or "0.0.0.0", registry=registry)
    return int(server.server_port)


class _MultiProcessTree(Collector):
    """prometheus_client's multiprocess files in a folder and the folders below it, merged into one set of metrics."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def collect(self) -> Iterator[Metric]:
        files = sorted(str(p) for p in self._root.rglob("*.db"))
        yield from MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call]


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


UNKNOWN_METHOD = "unknown"
"""The `method` label of calls to a method the service does not serve: callers choose method names freely, and
every distinct label value is a new time series kept for the life of the process."""

HEALTH_SERVICE = "grpc.health.v1.Health"


def served_methods(services: Sequence[str]) -> frozenset[str]:
    """The full method names (`/package.Service/Method`) of the named services, from the loaded protobuf descriptors."""
    pool = descriptor_pool.Default()
    methods: set[str] = set()
    for name in services:
        try:
            service = pool.FindServiceByName(name)
        except KeyError:
            log.warning("no descriptor for a served gRPC service", extra={"service": name})
            continue
        methods.update(f"/{service.full_name}/{method.name}" for method in service.methods)
    return frozenset(methods)


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts and times every unary gRPC call a service answers (streams are counted when they end).

    `services` names the gRPC services the server serves (health checking is added): a call to any other method,
    such as one a control-plane token check refuses before gRPC could answer UNIMPLEMENTED, is labelled
    UNKNOWN_METHOD rather than with the name the caller made up.
    """

    def __init__(self, services: Sequence[str] = ()) -> None:
        self._services = (HEALTH_SERVICE, *services)
        self._known: frozenset[str] | None = None

    def method_label(self, method: str) -> str:
        """The `method` label of a call: its name when the service serves it, else UNKNOWN_METHOD."""
        if self._known is None:
            # Resolved on the first call: by then every servicer (and its descriptors) is registered.
            self._known = served_methods(self._services)
        return method if method in self._known else UNKNOWN_METHOD

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = self.method_label(handler_call_details.method)
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
    from cortado._nats import connect

    nc = await connect(nats_url, name)
    watch_nats(nc)
    serve_metrics(metrics_address)
    return nc
