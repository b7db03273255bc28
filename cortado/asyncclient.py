"""The asyncio public client (grpc.aio): the sync Client's methods, awaitable, for async web apps and workers.

Results are the protobuf types the services answer with (`records_pb2.RequestView`: `id`, `status`,
`result_json`, `error`, `webhook`, ...). Refusals raise the errors of `cortado._clientcommon` (NotFound,
InvalidRequest, QueueFull with `retry_after`, AlreadyFinished, NoResult, Unauthenticated, PermissionDenied,
Unavailable), all grpc.RpcError subclasses.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import grpc
from google.api import httpbody_pb2
from grpc import aio

from cortado._clientcommon import (
    CHANNEL_OPTIONS,
    NoResult,
    bearer,
    channel_security,
    client_error,
    submit_request,
    watch_ends,
    watch_requests,
)
from cortado.v1 import public_pb2, public_pb2_grpc, records_pb2

T = TypeVar("T")

SUBMIT_TIMEOUT_SECONDS = 60.0
"""Deadline of a Submit without a wait (a wait adds itself to it)."""

CALL_TIMEOUT_SECONDS = 30.0
"""Deadline of Get and Cancel."""


class AsyncClient:
    """Submits requests and reads their state over gRPC with asyncio (through Envoy's port, or the services).

    Use it as `async with AsyncClient("localhost:8888") as client:` or call `await client.close()`. api_key, when
    given, is sent on every call as `authorization: Bearer <api_key>`. ca: the PEM file of the CA that signed the
    public port's certificate, to connect with TLS; empty: plain text.
    """

    def __init__(self, address: str, api_key: str = "", ca: str | Path = "") -> None:
        security = channel_security(ca)
        if security is None:
            self._channel = aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        else:
            self._channel = aio.secure_channel(address, security, options=CHANNEL_OPTIONS)
        self._submission = public_pb2_grpc.SubmissionStub(self._channel)
        self._results = public_pb2_grpc.ResultsStub(self._channel)
        self._requests = public_pb2_grpc.RequestsStub(self._channel)
        self._metadata = bearer(api_key)

    async def close(self) -> None:
        """Close the channel (calls under way are cancelled)."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    request = staticmethod(submit_request)
    """One request to submit with submit_many: `cortado._clientcommon.submit_request`."""

    async def submit(
        self,
        api: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        idempotency_key: str = "",
        priority: str = "",
        webhook: str = "",
    ) -> str:
        """Submit one payload; the request id."""
        request = submit_request(api, data, content_type, idempotency_key, priority, webhook)
        call = self._submission.Submit(request, timeout=SUBMIT_TIMEOUT_SECONDS, metadata=self._metadata)
        reply: public_pb2.SubmitResponse = await _answer(call)
        return str(reply.id)

    async def submit_and_wait(
        self,
        api: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        wait: float = 60.0,
        idempotency_key: str = "",
        priority: str = "",
        webhook: str = "",
    ) -> records_pb2.RequestView:
        """Submit one payload and wait up to `wait` seconds (capped by the service, 60 s by default).

        The request's final state if it finished within the wait, else its state then (the request goes on:
        follow its `id` with wait() or get()).
        """
        request = submit_request(api, data, content_type, idempotency_key, priority, webhook)
        request.wait = wait
        call = self._submission.Submit(request, timeout=wait + SUBMIT_TIMEOUT_SECONDS, metadata=self._metadata)
        reply: public_pb2.SubmitResponse = await _answer(call)
        return reply.request

    async def get(self, api: str, request_id: str) -> records_pb2.RequestView:
        """The request's current state (status NOT_FOUND when unknown or expired: not an error)."""
        call = self._results.Get(
            public_pb2.GetRequest(api=api, id=request_id), timeout=CALL_TIMEOUT_SECONDS, metadata=self._metadata
        )
        reply: public_pb2.GetResponse = await _answer(call)
        return reply.request

    async def read_result(
        self, api: str, request_id: str, timeout: float | None = None
    ) -> tuple[str, AsyncIterator[bytes]]:
        """A completed request's result: its media type and its bytes, streamed (Results/ReadResult).

        Works for every kind of result (a dict's JSON is `application/json`); a large one arrives in chunks of at
        most 1 MiB. NotFound at once for an unknown or expired id; NoResult while the request is not completed;
        a ClientError with DATA_LOSS while iterating when the stored bytes no longer match their SHA-256.
        """
        call = self._results.ReadResult(
            public_pb2.ReadResultRequest(api=api, id=request_id), timeout=timeout, metadata=self._metadata
        )
        try:
            first = await call.read()
        except aio.AioRpcError as exc:
            raise _translated(exc, no_result=True) from None
        if not isinstance(first, httpbody_pb2.HttpBody):
            raise RuntimeError(f"ReadResult of request {request_id!r} ended without a message")

        async def chunks() -> AsyncIterator[bytes]:
            yield first.data
            try:
                while isinstance(message := await call.read(), httpbody_pb2.HttpBody):
                    yield message.data
            except aio.AioRpcError as exc:
                raise _translated(exc) from None

        return first.content_type, chunks()

    async def cancel(self, api: str, request_id: str) -> records_pb2.RequestView:
        """Cancel a request: its state, now `cancelled` (the same when it already was).

        AlreadyFinished when it had completed or failed (the message names the status); NotFound for an unknown
        id or API.
        """
        request = public_pb2.CancelRequestRequest(api=api, id=request_id)
        call = self._requests.Cancel(request, timeout=CALL_TIMEOUT_SECONDS, metadata=self._metadata)
        reply: public_pb2.CancelResponse = await _answer(call)
        return reply.request

    async def watch(
        self, api: str, request_id: str, timeout: float | None = None
    ) -> AsyncIterator[records_pb2.RequestView]:
        """Every state of the request from now on, ending with its final one (or NOT_FOUND).

        A Watch stream lasts at most the service's cap (240 s by default); past it this calls Watch again, so
        the iteration ends only with a final state, or at `timeout` seconds (DEADLINE_EXCEEDED) when given.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        last_status: int | None = None
        while True:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            call = self._results.Watch(
                public_pb2.WatchRequest(api=api, id=request_id), timeout=left, metadata=self._metadata
            )
            try:
                async for reply in call:
                    if reply.request.status != last_status:  # a new Watch starts with the state already seen
                        last_status = reply.request.status
                        yield reply.request
                    if watch_ends(reply.request):
                        return
                return
            except aio.AioRpcError as exc:
                out_of_time = deadline is not None and loop.time() >= deadline
                if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED or out_of_time:
                    raise _translated(exc) from None

    async def wait(self, api: str, request_id: str, timeout: float | None = None) -> records_pb2.RequestView:
        """The request's final state (or NOT_FOUND), following its Watch stream."""
        last: records_pb2.RequestView | None = None
        async for state in self.watch(api, request_id, timeout):
            last = state
        if last is None:
            raise RuntimeError(f"Watch of request {request_id!r} ended without a state")
        return last

    async def submit_many(
        self,
        requests: Iterable[public_pb2.SubmitRequest] | AsyncIterable[public_pb2.SubmitRequest],
        timeout: float | None = None,
    ) -> AsyncIterator[public_pb2.SubmitStreamResponse]:
        """Submit many requests over one stream (Submission/SubmitStream), sent as the iterable yields them.

        Yields one answer per request, in order: `id` when accepted; otherwise `status.code` (a grpc.StatusCode
        value: NOT_FOUND, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE) and `status.message`, and the stream
        goes on. Build requests with AsyncClient.request.
        """
        call = self._submission.SubmitStream(_as_async(requests), timeout=timeout, metadata=self._metadata)
        try:
            async for reply in call:
                yield reply
        except aio.AioRpcError as exc:
            raise _translated(exc) from None

    async def results(
        self, api: str, ids: Iterable[str] | AsyncIterable[str], timeout: float | None = None
    ) -> AsyncIterator[records_pb2.RequestView]:
        """The final state of each request named (completed, failed, cancelled or NOT_FOUND), as they finish.

        Over one stream (Results/WatchMany). ids may be a list, or a lazy (async) iterable such as the ids coming
        back from submit_many: each is followed as soon as it is known, and the stream ends once the iterable is
        exhausted and every request it named has finished. NotFound when the API is not deployed.
        """
        messages: Iterator[public_pb2.WatchManyRequest] | AsyncIterator[public_pb2.WatchManyRequest]
        messages = _watch_one_by_one(api, ids) if isinstance(ids, AsyncIterable) else watch_requests(api, ids)
        call = self._results.WatchMany(_as_async(messages), timeout=timeout, metadata=self._metadata)
        try:
            async for reply in call:
                if reply.HasField("error"):
                    raise client_error(_status_code(reply.error.code), reply.error.message)
                yield reply.request
        except aio.AioRpcError as exc:
            raise _translated(exc) from None


def _status_code(number: int) -> grpc.StatusCode:
    """The grpc.StatusCode of a numeric status code (UNKNOWN for a number gRPC does not define)."""
    return next((code for code in grpc.StatusCode if code.value[0] == number), grpc.StatusCode.UNKNOWN)


def _translated(exc: aio.AioRpcError, no_result: bool = False) -> grpc.RpcError:
    """The ClientError a failed call stands for, its metadata consulted (a full queue's `retry-after`).

    no_result: a FAILED_PRECONDITION is NoResult (reading the result of a request not completed).
    """
    if no_result and exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
        return NoResult(exc.code(), exc.details() or "")
    metadata = [*(exc.initial_metadata() or ()), *(exc.trailing_metadata() or ())]
    return client_error(exc.code(), exc.details() or "", metadata)


async def _answer(call: Awaitable[T]) -> T:
    """The call's reply; a failed call raises its ClientError."""
    try:
        return await call
    except aio.AioRpcError as exc:
        raise _translated(exc) from None


async def _as_async(items: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    """Items of a sync or async iterable, as an async iterator (what a grpc.aio stream takes for its requests)."""
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


async def _watch_one_by_one(api: str, ids: AsyncIterable[str]) -> AsyncIterator[public_pb2.WatchManyRequest]:
    """WatchMany's requests for ids that come one at a time."""
    async for request_id in ids:
        yield public_pb2.WatchManyRequest(api=api, ids=[request_id])
