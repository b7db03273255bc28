"""How webhooks are POSTed: an httpx client that connects only where the URL policy allows, and reads of the answer.

The name in a webhook URL is resolved when connecting, checked against `cortado.webhooks.UrlPolicy`, and the
connection made to a checked address, so DNS answering differently between a check and the connection cannot
slip past it; no proxy from the environment is used and no redirect followed.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from cortado import webhooks
from services.webhooks.config import WebhookSettings

USER_AGENT = "Cortado-Webhooks/1"

ANSWER_READ_SECONDS = 2.0
"""Longest the start of a failed attempt's answer is read for its error message."""

ANSWER_START_BYTES = 1024
"""Bytes of a failed attempt's answer read; its first ERROR_ANSWER_CHARS characters go into last_error."""

ERROR_ANSWER_CHARS = 200


class CheckedBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections only to addresses the URL policy allows (`webhooks.check_resolved`).

    The name is resolved here, checked, and the connection made to a checked address: DNS answering
    differently between a check and the connection cannot slip past it. TLS still verifies the name.
    """

    def __init__(self, policy: webhooks.UrlPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """A connection to host:port; WebhookUrlError when host resolves to an address the policy refuses."""
        try:
            async with asyncio.timeout(timeout):
                found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
        webhooks.check_resolved(host, addresses, self._policy, port=port)
        failure: Exception = httpcore.ConnectError(f"{host} resolves to no address")
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectTimeout:
                failure = httpcore.ConnectTimeout(f"connecting to {_bracketed(address)}:{port} timed out")
            except httpcore.ConnectError as exc:
                failure = httpcore.ConnectError(f"cannot connect to {_bracketed(address)}:{port}: {_root_cause(exc)}")
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        """Never: webhooks go over TCP."""
        raise httpcore.ConnectError("webhooks are not sent over Unix sockets")

    async def sleep(self, seconds: float) -> None:
        """Sleep (httpcore waits with it)."""
        await self._inner.sleep(seconds)


def _bracketed(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _root_cause(exc: BaseException) -> str:
    """The error at the bottom of exc's chain (anyio's "All connection attempts failed" hides ECONNREFUSED)."""
    seen = exc
    while (below := seen.__cause__ or seen.__context__) is not None:
        seen = below
    if isinstance(seen, OSError) and seen.errno:
        return os.strerror(seen.errno)
    return str(seen) or type(seen).__name__


class CheckedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport, connecting through CheckedBackend, never through a proxy from the environment."""

    def __init__(self, policy: webhooks.UrlPolicy, limits: httpx.Limits) -> None:
        super().__init__(limits=limits, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=CheckedBackend(policy),
        )


def http_client(settings: WebhookSettings) -> httpx.AsyncClient:
    """The client webhooks are POSTed with: the policy checked on every connection, no redirect followed."""
    limits = httpx.Limits(max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency)
    return httpx.AsyncClient(
        transport=CheckedTransport(settings.policy, limits),
        timeout=httpx.Timeout(settings.timeout_seconds),
        follow_redirects=False,
        trust_env=False,
        headers={"user-agent": USER_AGENT},
    )


def describe_error(exc: BaseException) -> str:
    """An exception as `Type: message` (the type alone when it says nothing), for last_error."""
    text = str(exc).strip()
    kind = type(exc).__name__
    return f"{kind}: {text}" if text else kind


async def answer_start(response: httpx.Response) -> str:
    """The first characters of the answer's body, for last_error (empty when it cannot be read in time)."""
    received = b""
    try:
        async with asyncio.timeout(ANSWER_READ_SECONDS):
            async for chunk in response.aiter_raw():
                received += chunk
                if len(received) >= ANSWER_START_BYTES:
                    break
    except (TimeoutError, httpx.HTTPError):
        pass
    text = received[:ANSWER_START_BYTES].decode("utf-8", errors="replace")
    return " ".join(text.split())[:ERROR_ANSWER_CHARS]
