"""What the sync and async public clients share: request building, channel options and the errors they raise.

The errors subclass grpc.RpcError and keep its `code()` and `details()`, so code written against gRPC's own
exception goes on working; each names the case a caller handles differently (retry later, fix the request,
stop asking).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import grpc
from google.api import httpbody_pb2

from cortado import _names, _tls, records
from cortado._service import MAX_MESSAGE_BYTES
from cortado.v1 import public_pb2, records_pb2

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]
"""gRPC channel options of every client: messages as large as the services accept."""


def channel_security(ca: str | Path) -> grpc.ChannelCredentials | None:
    """Credentials of a channel that trusts the CA in the PEM file `ca` (TLS); None for plain text (empty `ca`).

    cortado._tls.TlsError names the file when it cannot be read or holds no certificate.
    """
    return _tls.channel_credentials(_tls.load_ca(ca, "ca")) if ca else None


def bearer(api_key: str) -> tuple[tuple[str, str], ...]:
    """The metadata that carries an API key (none for an empty key)."""
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Sequence[tuple[str, str]] | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class MetadataInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]  # grpc ships no type hints
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """Adds fixed metadata (an API key) to every call of a sync channel."""

    def __init__(self, metadata: Sequence[tuple[str, str]]) -> None:
        self._metadata = tuple(metadata)

    def _with(self, details: Any) -> _Details:
        return _Details(
            details.method,
            details.timeout,
            (*(details.metadata or ()), *self._metadata),
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._with(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._with(details), requests)


IDS_PER_MESSAGE = 1000
"""Ids per WatchManyRequest when a whole list is known up front."""

_PRIORITIES = {"": records_pb2.PRIORITY_UNSPECIFIED} | {name: value for value, name in _names.PRIORITY_NAMES.items()}


def priority_value(name: str) -> records_pb2.Priority.ValueType:
    """The Priority a name says: "high", "normal", "low" (any case), or "" for the default (normal)."""
    try:
        return _PRIORITIES[name.strip().lower()]  # type: ignore[return-value]
    except KeyError:
        raise ValueError(f"priority must be high, normal or low, not {name!r}") from None


def submit_request(
    api: str,
    data: bytes,
    content_type: str = "application/octet-stream",
    idempotency_key: str = "",
    priority: str = "",
    webhook: str = "",
) -> public_pb2.SubmitRequest:
    """One request to submit (Submit, or an item of SubmitStream).

    priority: "high", "normal" or "low" ("" is normal; ValueError for anything else). webhook: a URL Cortado POSTs
    the request's final state to (it overrides the API's `webhook.url`).
    """
    body = httpbody_pb2.HttpBody(content_type=content_type, data=data)
    return public_pb2.SubmitRequest(
        api=api, body=body, idempotency_key=idempotency_key, priority=priority_value(priority), webhook=webhook
    )


def watch_ends(view: records_pb2.RequestView) -> bool:
    """Whether no further state of this request will come on a Watch (final, or unknown)."""
    return view.status == records_pb2.REQUEST_STATUS_NOT_FOUND or records.is_final(view.status)


def watch_requests(api: str, ids: Iterable[str]) -> Iterator[public_pb2.WatchManyRequest]:
    """WatchMany's requests: a list in messages of many ids, a lazy iterable one id at a time as it comes."""
    if isinstance(ids, Sequence) and not isinstance(ids, str):
        for start in range(0, len(ids), IDS_PER_MESSAGE):
            yield public_pb2.WatchManyRequest(api=api, ids=ids[start : start + IDS_PER_MESSAGE])
        return
    for request_id in ids:
        yield public_pb2.WatchManyRequest(api=api, ids=[request_id])


class ClientError(grpc.RpcError):  # type: ignore[misc]  # grpc ships no type hints
    """A call Cortado refused or could not serve: `code()` the gRPC status, `details()` (and str()) its message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self._code = code
        self._message = message

    def code(self) -> grpc.StatusCode:
        """The gRPC status code."""
        return self._code

    def details(self) -> str:
        """The message, as the service wrote it."""
        return self._message

    def __str__(self) -> str:
        return self._message


class NotFound(ClientError):
    """NOT_FOUND: the API is not deployed, or (cancel) the request is unknown or expired."""


class InvalidRequest(ClientError):
    """INVALID_ARGUMENT: the request itself is wrong (body, priority, webhook URL, wait); resending it won't help."""


class QueueFull(ClientError):
    """RESOURCE_EXHAUSTED with a retry-after: the API's queue is full, or the API key is over its rate limit; try
    again after `retry_after` seconds."""

    def __init__(self, code: grpc.StatusCode, message: str, retry_after: float) -> None:
        super().__init__(code, message)
        self.retry_after = retry_after


class AlreadyFinished(ClientError):
    """FAILED_PRECONDITION on cancel: the request had already completed or failed (the message says which)."""


class NoResult(ClientError):
    """FAILED_PRECONDITION on reading a result: the request is not completed (the message names its status)."""


class Unauthenticated(ClientError):
    """UNAUTHENTICATED: no credential, or one the front door does not accept (the message says why)."""


class PermissionDenied(ClientError):
    """PERMISSION_DENIED: the credential is valid but not for this API."""


class Unavailable(ClientError):
    """UNAVAILABLE: a service could not be reached; nothing was done, so the call is safe to retry."""


_BY_CODE: dict[grpc.StatusCode, type[ClientError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.FAILED_PRECONDITION: AlreadyFinished,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
}


def client_error(
    code: grpc.StatusCode, message: str, metadata: Iterable[tuple[str, str | bytes]] | None = None
) -> ClientError:
    """The ClientError for a failed call's code, message and metadata (initial and trailing, in any order).

    RESOURCE_EXHAUSTED with a `retry-after` is QueueFull; without one (a message larger than gRPC allows) it is
    a plain ClientError, as is every code without a class of its own.
    """
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        for key, value in metadata or ():
            if key == "retry-after":
                text = value.decode() if isinstance(value, bytes) else value
                try:
                    return QueueFull(code, message, float(text))
                except ValueError:
                    break
        return ClientError(code, message)
    return _BY_CODE.get(code, ClientError)(code, message)
