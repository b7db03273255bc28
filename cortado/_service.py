"""Running a gRPC service process: health checking, signals and an orderly stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, NoReturn, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from cortado._env import Env
from cortado._lifecycle import Component

log = logging.getLogger(__name__)

T = TypeVar("T")
C = TypeVar("C", bound=Component)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Largest gRPC message a service takes or sends: above the 32 MiB body limit Envoy enforces,
so an oversized body is answered 413 by Envoy rather than RESOURCE_EXHAUSTED (429) by gRPC."""

MAX_PENDING_CALLS = 16384
"""Calls a service has received but not started yet (a burst: thousands of long polls arriving at once). Past it
gRPC sheds new calls at random, answering CANCELLED, until twice as many; gRPC's own default is 1,000 (3,000), which
Envoy's budget for waiting calls alone (8,192) exceeds."""

SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
    ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
    ("grpc.server.max_pending_requests_hard_limit", 2 * MAX_PENDING_CALLS),
]


def server_options(max_receive_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    """SERVER_OPTIONS with another limit on the messages the server takes."""
    return [(k, max_receive_bytes if k == "grpc.max_receive_message_length" else v) for k, v in SERVER_OPTIONS]


async def abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    """End the call with code and message (context.abort raises; this says so to the type checker)."""
    await context.abort(code, message)
    raise AssertionError("context.abort returned")


class _RefuseWhenStopping(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Once the service is stopping, new calls (health checks aside) get UNAVAILABLE, which callers may retry."""

    def __init__(self) -> None:
        self.stopping = False

        async def _refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await abort(context, grpc.StatusCode.UNAVAILABLE, "the service is stopping; it is safe to retry")

        self._refuse = grpc.unary_unary_rpc_method_handler(_refuse)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if self.stopping and not handler_call_details.method.startswith("/grpc.health.v1.Health/"):
            return self._refuse
        return await continuation(handler_call_details)


class ServiceRunner:
    """Owns a grpc.aio server with `grpc.health.v1` health and stops it in order on SIGTERM or SIGINT.

    It listens in plain text, or with `credentials` (grpc.ssl_server_credentials) on a TLS port only.

    A service's main enters what it runs into the runner as it builds them (`defer`, `enter`, `background`):
    they form one `AsyncExitStack`, undone in the reverse order. Order of the stop: the `on_stopping` callbacks
    and health NOT_SERVING, stop taking calls (in-flight ones get `grace` seconds), then the stack (background
    tasks cancelled, components stopped, NATS drained: each step within `grace`).
    """

    def __init__(
        self,
        name: str,
        address: str,
        service_names: Sequence[str],
        grace: float = 10.0,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        max_receive_bytes: int = MAX_MESSAGE_BYTES,
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        self.name = name
        self.address = address
        self.grace = grace
        self.drain_delay = Env().number("DRAIN_DELAY_SECONDS", 1.0, minimum=0)
        from cortado._telemetry import MetricsInterceptor
        from cortado._tracing import server_interceptors

        self._refusing = _RefuseWhenStopping()
        self.server = grpc.aio.server(
            options=server_options(max_receive_bytes),
            interceptors=[self._refusing, *server_interceptors(), MetricsInterceptor(service_names), *interceptors],
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._service_names = ["", *service_names]
        self._stop = asyncio.Event()
        self._stack = contextlib.AsyncExitStack()
        self._on_stopping: list[Callable[[], None]] = []
        self.port = 0
        self._credentials = credentials

    def defer(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Await callback after the gRPC server stopped: what is deferred last runs first."""
        self._stack.push_async_callback(self._within_grace, callback)

    async def enter(self, component: C) -> C:
        """Start component now and stop it after the gRPC server stopped (see defer); the component."""
        await component.start()
        self.defer(component.stop)
        return component

    def background(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run work as a task until the gRPC server stopped, then cancel it (see defer); the task."""
        task = asyncio.get_running_loop().create_task(work)

        async def cancel() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        self.defer(cancel)
        return task

    async def _within_grace(self, callback: Callable[[], Awaitable[None]]) -> None:
        try:
            await asyncio.wait_for(callback(), timeout=self.grace)
        except Exception:
            log.exception("error while stopping")

    def on_stopping(self, callback: Callable[[], None]) -> None:
        """Call callback as soon as the stop begins, while calls in flight go on (to end long waits early)."""
        self._on_stopping.append(callback)

    def request_stop(self) -> None:
        """Begin the orderly stop (what SIGTERM does)."""
        self._stop.set()

    async def start(self) -> None:
        """Bind and start serving; health says SERVING for every registered service."""
        if self._credentials is None:
            self.port = self.server.add_insecure_port(self.address)
        else:
            self.port = self.server.add_secure_port(self.address, self._credentials)
        if self.port == 0:
            raise RuntimeError(f"{self.name}: cannot listen on {self.address} (Address already in use, or not local)")
        await self.server.start()
        for service in self._service_names:
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", extra={"address": self.address, "port": self.port, "tls": self._credentials is not None})

    async def run_until_stopped(self) -> None:
        """Serve until SIGTERM/SIGINT or request_stop(), then stop in order."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        await self._stop.wait()
        log.info("stopping", extra={"grace_seconds": self.grace})
        await self.health.enter_graceful_shutdown()
        self._refusing.stopping = True
        for stopping in self._on_stopping:
            stopping()
        # Envoy health-checks every half second: give it time to stop sending new calls here (those that
        # still come get UNAVAILABLE, which Envoy retries on another instance); calls in flight go on.
        await asyncio.sleep(self.drain_delay)
        await self.server.stop(self.grace)
        await self._stack.aclose()
        log.info("stopped")


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run main on uvloop (a faster event loop; every hop on the request path is Python) when installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def run_main(service: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Entry point of a service process: JSON logging, then main(); a bad setting exits 2 with its message."""
    from cortado import _nats
    from cortado._env import SettingsError
    from cortado._logs import setup_logging
    from cortado._tracing import setup_tracing, shutdown_tracing

    setup_logging(service)
    setup_tracing(service)
    try:
        _nats.set_replicas(Env().integer("NATS_REPLICAS", 1, minimum=1))
        run_event_loop(main())
    except SettingsError as exc:
        log.error("invalid setting: %s", exc)
        raise SystemExit(2) from None
    finally:
        shutdown_tracing()
