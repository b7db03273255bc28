"""The Results gRPC service: a request's state, at once, after a wait, or as a stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from google.api import httpbody_pb2
from google.rpc import status_pb2
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from cortado import _resultobjects, records
from cortado._apikeys import KeyGate
from cortado._mirror import ApiIndex, KvMirror
from cortado._service import abort
from cortado._waiting import DEFAULT_MAX_WATCH_SECONDS, HTTP_STATUS_HEADER, capped
from cortado.records.follow import RecordWaiters
from cortado.result import JSON_TYPE
from cortado.v1 import control_pb2, public_pb2, public_pb2_grpc, records_pb2

log = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"[0-9a-f]{32}")

_READS_AT_ONCE = 64
"""WatchMany reads the current records of the ids of one message this many at a time."""


@dataclass(frozen=True)
class _Read:
    """WatchMany: the record of an id as read once it was followed (None: not found)."""

    request_id: str
    record: records_pb2.RequestRecord | None


@dataclass(frozen=True)
class _Followed:
    """WatchMany: an id being followed, the API as the client named it and the API's name."""

    named: str
    api: str


class ResultsServicer(public_pb2_grpc.ResultsServicer):
    """Reads request records from the requests bucket (or the queue, while they wait); waits through RecordWaiters."""

    def __init__(
        self,
        js: JetStreamContext,
        requests: KeyValue,
        apis: KvMirror[control_pb2.ApiSpec],
        waiters: RecordWaiters,
        max_wait_seconds: float,
        gate: KeyGate | None = None,
    ) -> None:
        self._js = js
        self._requests = requests
        self._apis = apis
        self._index = ApiIndex(apis)
        self._gate = (gate or KeyGate(required=False)).resolving(self._index.lookup)
        self._waiters = waiters
        self._max_wait = max_wait_seconds
        self._results: ObjectStore | None = None

    async def _api(self, requested: str, context: grpc.aio.ServicerContext) -> str:
        """The name of the API answering at /<requested> (its name or endpoint), once the call's API key (when keys
        are required) may read it; UNAUTHENTICATED or PERMISSION_DENIED, or NOT_FOUND, otherwise."""
        await self._gate.admit(context, requested)
        spec = self._index.lookup(requested)
        if spec is None:
            await abort(context, grpc.StatusCode.NOT_FOUND, f"API {requested!r} is not deployed")
        return str(spec.name)

    async def _read(self, api: str, request_id: str) -> records_pb2.RequestRecord | None:
        """The request's record, or `in_queue` while it waits in the API's queue; None for an unknown id."""
        if not _REQUEST_ID.fullmatch(request_id):
            # Ingest only hands out 32 hex digits: anything else is unknown (and may not even be a NATS key).
            return None
        try:
            record = await records.current(self._js, self._requests, api, request_id)
        except (KeyNotFoundError, ValueError):
            return None
        # An id only exists under the API it was submitted to.
        return record if record is not None and record.api == api else None

    async def _current_or_final(self, api: str, request_id: str, wait: float) -> records_pb2.RequestView:
        wait = capped(wait, self._max_wait)
        if wait <= 0 or not _REQUEST_ID.fullmatch(request_id):
            # Not a request id (ingest hands out 32 hex digits): unknown, and not a NATS subject to follow.
            record = await self._read(api, request_id)
            return records.view(record) if record else records.not_found_view(request_id)
        async with self._waiters.watch(request_id) as updates:
            # Subscribed before reading: a write between the read and the wait is not missed.
            record = await self._read(api, request_id)
            if record is None:
                return records.not_found_view(request_id)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    while not records.is_final(record.status):
                        newer = await updates.get()
                        if records.may_move(record.status, newer.status):
                            record = newer
            if not records.is_final(record.status):
                # The wait ended: answer the stored state (a write NATS stored a moment after this caller's
                # read, yet published before its subscription, is seen here).
                record = await self._read(api, request_id) or record
            return records.view(record)

    async def GetResult(
        self, request: public_pb2.GetResultRequest, context: grpc.aio.ServicerContext
    ) -> httpbody_pb2.HttpBody:
        api = await self._api(request.api, context)
        v = await self._current_or_final(api, request.id, request.wait)
        if v.status == records_pb2.REQUEST_STATUS_NOT_FOUND:
            await context.send_initial_metadata(((HTTP_STATUS_HEADER, "404"),))
        return httpbody_pb2.HttpBody(content_type="application/json", data=records.render_json(v, request.api))

    async def Get(self, request: public_pb2.GetRequest, context: grpc.aio.ServicerContext) -> public_pb2.GetResponse:
        api = await self._api(request.api, context)
        return public_pb2.GetResponse(request=await self._current_or_final(api, request.id, 0))

    max_watch_seconds: float = DEFAULT_MAX_WATCH_SECONDS
    """How long one Watch call streams at most (`CORTADO_MAX_WATCH_SECONDS`)."""

    async def Watch(
        self, request: public_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[public_pb2.WatchResponse]:
        api = await self._api(request.api, context)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_watch_seconds
        if not _REQUEST_ID.fullmatch(request.id):
            yield public_pb2.WatchResponse(request=records.not_found_view(request.id))
            return
        async with self._waiters.watch(request.id) as updates:
            record = await self._read(api, request.id)
            if record is None:
                yield public_pb2.WatchResponse(request=records.not_found_view(request.id))
                return
            yield public_pb2.WatchResponse(request=records.view(record))
            while not records.is_final(record.status):
                try:
                    # Only the wait for a write is timed: the deadline never interrupts a response being sent.
                    newer = await asyncio.wait_for(updates.get(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    message = _watch_ended(self.max_watch_seconds, record)
                    await abort(context, grpc.StatusCode.DEADLINE_EXCEEDED, message)
                if newer.status != record.status and records.may_move(record.status, newer.status):
                    record = newer
                    yield public_pb2.WatchResponse(request=records.view(record))

    async def WatchMany(
        self, request_iterator: AsyncIterator[public_pb2.WatchManyRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[public_pb2.WatchManyResponse]:
        # Every event reaches this one queue: records written (from the waiters), records read once an id is
        # followed, answers ready to send, and None once the client closed its side.
        events: asyncio.Queue[records_pb2.RequestRecord | _Read | public_pb2.WatchManyResponse | None]
        events = asyncio.Queue()
        following: dict[str, _Followed] = {}
        metadata = context.invocation_metadata()
        async with self._waiters.follow(events.put_nowait) as followed:

            async def read(api: str, request_id: str) -> None:
                events.put_nowait(_Read(request_id, await self._read(api, request_id)))

            async def take_ids() -> None:
                try:
                    await follow_ids()
                finally:
                    events.put_nowait(None)

            async def follow_ids() -> None:
                seen: set[str] = set()
                async for message in request_iterator:
                    spec = self._index.lookup(message.api)
                    fresh = [i for i in dict.fromkeys(message.ids) if i not in seen]
                    seen.update(fresh)
                    refusal = self._gate.refusal(metadata, message.api)
                    if refusal is not None or spec is None:
                        code, text = (
                            (refusal.code, refusal.message)
                            if refusal is not None
                            else (grpc.StatusCode.NOT_FOUND, f"API {message.api!r} is not deployed")
                        )
                        error = status_pb2.Status(code=code.value[0], message=text)
                        for request_id in fresh:
                            view = records.not_found_view(request_id)
                            events.put_nowait(public_pb2.WatchManyResponse(api=message.api, request=view, error=error))
                        continue
                    for request_id in [i for i in fresh if not _REQUEST_ID.fullmatch(i)]:
                        # Not a request id (nor a NATS subject to follow): unknown at once.
                        view = records.not_found_view(request_id)
                        events.put_nowait(public_pb2.WatchManyResponse(api=message.api, request=view))
                    fresh = [i for i in fresh if _REQUEST_ID.fullmatch(i)]
                    for request_id in fresh:
                        # Followed before it is read: a write between the read and the follow is not missed.
                        following[request_id] = _Followed(message.api, spec.name)
                        await followed.add(request_id)
                    for start in range(0, len(fresh), _READS_AT_ONCE):
                        await asyncio.gather(*(read(spec.name, i) for i in fresh[start : start + _READS_AT_ONCE]))

            def answer(request_id: str, view: records_pb2.RequestView) -> public_pb2.WatchManyResponse:
                followed.drop(request_id)
                return public_pb2.WatchManyResponse(api=following.pop(request_id).named, request=view)

            reader = asyncio.create_task(take_ids())
            reader.add_done_callback(lambda task: task.cancelled() or task.exception())
            try:
                closed = False
                while not closed or following:
                    event = await events.get()
                    if event is None:
                        closed = True
                        # A failed read of the client's side ends the call with its error.
                        await reader
                    elif isinstance(event, public_pb2.WatchManyResponse):
                        yield event
                    elif isinstance(event, _Read):
                        if event.request_id not in following:
                            continue
                        if event.record is None:
                            yield answer(event.request_id, records.not_found_view(event.request_id))
                        elif records.is_final(event.record.status):
                            yield answer(event.request_id, records.view(event.record))
                    else:
                        entry = following.get(event.id)
                        if entry is not None and event.api == entry.api and records.is_final(event.status):
                            yield answer(event.id, records.view(event))
            finally:
                reader.cancel()

    async def ReadResult(
        self, request: public_pb2.ReadResultRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        api = await self._api(request.api, context)
        record = await self._read(api, request.id)
        if record is None:
            await abort(context, grpc.StatusCode.NOT_FOUND, records.not_found_message(request.api, request.id))
        if record.status != records_pb2.REQUEST_STATUS_COMPLETED:
            status = records.STATUS_NAMES.get(record.status, "unknown")
            # Over HTTP a 409 (Envoy's Lua filter reads the header; gRPC clients see FAILED_PRECONDITION).
            context.set_trailing_metadata(((HTTP_STATUS_HEADER, "409"),))
            await abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"request {request.id!r} of API {request.api!r} is {status}: only a completed request has a result",
            )
        content_type = record.result_content_type or JSON_TYPE
        if not record.result_object:
            data = record.result_data if record.result_content_type else record.result_json
            yield httpbody_pb2.HttpBody(content_type=content_type, data=data)
            return
        if self._results is None:
            self._results = await _resultobjects.results_store(self._js)
        first = True
        try:
            async for data in _resultobjects.read_result(
                self._js, self._results, record.result_object, record.result_sha256
            ):
                yield httpbody_pb2.HttpBody(content_type=content_type if first else "", data=data)
                first = False
        except _resultobjects.ResultDataLossError as exc:
            log.error("stored result unreadable", extra={"id": request.id, "error": str(exc)})
            await abort(context, grpc.StatusCode.DATA_LOSS, f"request {request.id!r}: {exc}")


def _watch_ended(limit: float, record: records_pb2.RequestRecord) -> str:
    """DEADLINE_EXCEEDED's message when a Watch reaches its time limit before the request finished."""
    status = records.STATUS_NAMES.get(record.status, "unknown")
    return (
        f"Watch streams for at most {limit:g}s and request {record.id} is still {status}: "
        "call Watch again to go on following it"
    )
