"""OpenTelemetry tracing: OTLP export, W3C trace context in gRPC metadata and NATS headers.

Tracing exports when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (Jaeger in a deployment);
without it spans are not recorded. The sampler is OpenTelemetry's default,
`parentbased_always_on` (every request traced, an incoming `traceparent`'s
sampling decision kept), and `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`
change it (e.g. `parentbased_traceidratio` with `0.1`).

The trace context flows with or without an exporter: a service continues an incoming
`traceparent` (or starts a trace with a new random id), passes it on in the work item's
NATS headers, and the handler process makes it current while the handler runs, so every
log line a handler writes for a request carries that request's trace id.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import grpc
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
    """gRPC server interceptors that continue the caller's trace, or start one.

    With an exporter, OpenTelemetry's (a recorded server span per call); without one, a light interceptor that
    makes the incoming W3C trace context current (a new trace id when the call carries none), recording nothing.
    """
    if not enabled():
        return [TraceContextInterceptor()]
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor()]  # type: ignore[no-untyped-call]


def new_context() -> context.Context:
    """A context holding a new trace (random W3C ids, sampled), recording nothing: a trace id for log lines."""
    span = trace.SpanContext(
        trace_id=secrets.randbits(128) or 1,
        span_id=secrets.randbits(64) or 1,
        is_remote=False,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(span))


def continued(headers: Mapping[str, str] | None) -> context.Context:
    """The trace context these headers (or gRPC metadata) carry, or a new trace when they carry none."""
    ctx = extract(headers)
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else new_context()


class TraceContextInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Runs every call (but health checks) in the trace context its metadata carries, or in a new trace."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith("/grpc."):
            return handler
        metadata = handler_call_details.invocation_metadata or ()
        carrier = {str(k): str(v) for k, v in metadata if k in _TRACE_KEYS}
        ctx = continued(carrier)
        for kind, make in _HANDLER_KINDS.items():
            behaviour = getattr(handler, kind)
            if behaviour is not None:
                return make(
                    _in_context(behaviour, ctx),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler


_TRACE_KEYS = ("traceparent", "tracestate")

_HANDLER_KINDS: dict[str, Callable[..., grpc.RpcMethodHandler]] = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


def _in_context(behaviour: Callable[..., Any], ctx: context.Context) -> Callable[..., Any]:
    """behaviour (a coroutine or async generator function) run with ctx current; anything else unchanged."""
    if inspect.isasyncgenfunction(behaviour):

        async def stream(request: Any, servicer_context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            token = context.attach(ctx)
            try:
                async for response in behaviour(request, servicer_context):
                    yield response
            finally:
                context.detach(token)

        return stream
    if inspect.iscoroutinefunction(behaviour):

        async def call(request: Any, servicer_context: grpc.aio.ServicerContext) -> Any:
            token = context.attach(ctx)
            try:
                return await behaviour(request, servicer_context)
            finally:
                context.detach(token)

        return call
    return behaviour


def tracer(name: str) -> trace.Tracer:
    """A tracer for a module."""
    return trace.get_tracer(name)


def inject_headers(headers: dict[str, str]) -> dict[str, str]:
    """Add the current trace context (traceparent, tracestate) to NATS message headers (exported or not)."""
    if trace.get_current_span().get_span_context().is_valid:
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
