"""The Results gRPC service: a request's state, at once, after a wait, or as a stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections.abc import AsyncIterator

import grpc
from google.api import httpbody_pb2
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from cortado import records
from cortado.mirror import ApiIndex, KvMirror
from cortado.service import abort
from cortado.v1 import control_pb2, public_pb2, public_pb2_grpc, records_pb2
from services.results.waiters import RecordWaiters

log = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"[0-9a-f]{32}")

HTTP_STATUS_HEADER = "x-cortado-http-status"
"""Response metadata Envoy turns into the HTTP status (the transcoder alone would answer 200)."""


class ResultsServicer(public_pb2_grpc.ResultsServicer):
    """Reads request records from the requests bucket; waits through RecordWaiters."""

    def __init__(
        self,
        requests: KeyValue,
        apis: KvMirror[control_pb2.ApiSpec],
        waiters: RecordWaiters,
        max_wait_seconds: float,
    ) -> None:
        self._requests = requests
        self._apis = apis
        self._index = ApiIndex(apis)
        self._waiters = waiters
        self._max_wait = max_wait_seconds

    async def _api(self, requested: str, context: grpc.aio.ServicerContext) -> str:
        """The name of the API answering at /<requested> (its name or endpoint); NOT_FOUND otherwise."""
        spec = self._index.lookup(requested)
        if spec is None:
            await abort(context, grpc.StatusCode.NOT_FOUND, f"API {requested!r} is not deployed")
        return str(spec.name)

    async def _read(self, api: str, request_id: str) -> records_pb2.RequestRecord | None:
        if not _REQUEST_ID.fullmatch(request_id):
            # Ingest only hands out 32 hex digits: anything else is unknown (and may not even be a NATS key).
            return None
        try:
            entry = await self._requests.get(request_id)
        except (KeyNotFoundError, ValueError):
            return None
        if not entry.value:
            return None
        record = records_pb2.RequestRecord.FromString(entry.value)
        # An id only exists under the API it was submitted to.
        return record if record.api == api else None

    async def _current_or_final(self, api: str, request_id: str, wait: float) -> records_pb2.RequestView:
        wait = min(max(wait, 0.0), self._max_wait) if math.isfinite(wait) else (self._max_wait if wait > 0 else 0.0)
        if wait <= 0:
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

    async def Watch(
        self, request: public_pb2.WatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[public_pb2.WatchResponse]:
        api = await self._api(request.api, context)
        async with self._waiters.watch(request.id) as updates:
            record = await self._read(api, request.id)
            if record is None:
                yield public_pb2.WatchResponse(request=records.not_found_view(request.id))
                return
            yield public_pb2.WatchResponse(request=records.view(record))
            while not records.is_final(record.status):
                newer = await updates.get()
                if newer.status != record.status and records.may_move(record.status, newer.status):
                    record = newer
                    yield public_pb2.WatchResponse(request=records.view(record))
