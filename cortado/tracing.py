"""OpenTelemetry tracing: OTLP export, W3C trace context in gRPC metadata and NATS headers.

Tracing exports when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (Jaeger in a deployment);
without it spans are not recorded. The sampler is OpenTelemetry's default,
`parentbased_always_on` (every request traced, an incoming `traceparent`'s
sampling decision kept), and `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`
change it (e.g. `parentbased_traceidratio` with `0.1`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import context, trace

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)

_provider: TracerProvider | None = None


def enabled() -> bool:
    """Whether traces are exported (an OTLP endpoint is configured)."""
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def setup_tracing(service: str) -> None:
    """Install a tracer provider exporting over OTLP/gRPC for this process, when enabled()."""
    global _provider
    if not enabled() or _provider is not None:
        return
    # The SDK and exporter load only where traces are exported: an idle service stays smaller.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    _provider = TracerProvider(resource=Resource.create({"service.name": f"cortado-{service}"}))
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(_provider)


def shutdown_tracing() -> None:
    """Flush and stop the exporter (part of an orderly stop)."""
    if _provider is not None:
        with contextlib.suppress(Exception):
            _provider.shutdown()


def server_interceptors() -> list[Any]:
    """gRPC server interceptors that continue the caller's trace (empty when tracing is off)."""
    if not enabled():
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor()]  # type: ignore[no-untyped-call]


def tracer(name: str) -> trace.Tracer:
    """A tracer for a module."""
    return trace.get_tracer(name)


def inject_headers(headers: dict[str, str]) -> dict[str, str]:
    """Add the current trace context (traceparent, tracestate) to NATS message headers."""
    if enabled():
        from opentelemetry import propagate

        propagate.inject(headers)
    return headers


def extract(headers: Mapping[str, str] | None) -> context.Context:
    """The trace context NATS message headers carry."""
    # Loaded on first use: the propagators' entry points cost memory every idle process would pay.
    from opentelemetry import propagate

    return propagate.extract(dict(headers or {}))


@contextlib.contextmanager
def attached(ctx: context.Context) -> Iterator[None]:
    """Make ctx current for the block."""
    token = context.attach(ctx)
    try:
        yield
    finally:
        context.detach(token)


def instrument_outbound_http() -> None:
    """In a handler process: outgoing HTTP calls (urllib, urllib3, hence requests) carry the current trace."""
    if not enabled():
        return
    from opentelemetry.instrumentation.urllib import URLLibInstrumentor

    URLLibInstrumentor().instrument()
    # urllib3 (under requests) only where the handler's environment has it.
    if importlib.util.find_spec("urllib3") is not None:
        try:
            from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor

            URLLib3Instrumentor().instrument()
        except Exception:
            log.warning("outbound urllib3 calls will not carry the trace", exc_info=True)
