"""Bearer-token protection for control-plane gRPC services."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

_HEALTH_PREFIX = "/grpc.health.v1.Health/"
_OPEN_METHODS = frozenset({"/cortado.v1.Scheduler/GetConsoleFile"})
"""Calls that need no token: the web console's static files, which hold no data (the page asks for the token)."""


def is_loopback_host(host: str) -> bool:
    """Whether host (a name or an address, IPv6 in brackets or not) is this machine's loopback: `localhost`,
    127.0.0.0/8 or ::1. Anything listening elsewhere must ask for a token."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class TokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses every call but health checks and the console's files unless it carries `authorization: Bearer
    <token>`."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

        async def _deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid scheduler token is required")

        self._deny = grpc.unary_unary_rpc_method_handler(_deny)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        if method.startswith(_HEALTH_PREFIX) or method in _OPEN_METHODS:
            return await continuation(handler_call_details)
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else value
                if hmac.compare_digest(given, self._expected):
                    return await continuation(handler_call_details)
        return self._deny
