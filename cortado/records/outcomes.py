"""Waiting for the outcome of a request ingest just queued (`POST /<api>?wait=`, Submit's `wait`).

Only a submit that waits pays for it: it follows its own record's writes with `RecordWaiters` (a core NATS
subscription to `$KV.cortado_requests.<id>`, the mechanism the results service waits with), opened before the
request is queued, so no write of the record can come before it. Each write carries the whole record, so the
answer is the record the wait was woken by; a write that would move the record backwards is skipped. A request
that existed before (an idempotent retry) is read first, and `RecordWaiters` reads the record once more shortly
after subscribing when no write came (a write stored just before the subscription).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from cortado.records import locate
from cortado.records.follow import RecordWaiters
from cortado.records.states import is_final, may_move
from cortado.v1 import records_pb2

log = logging.getLogger(__name__)


class Outcomes:
    """Waits on request records; stop_waiting() ends every wait at once (the service is stopping)."""

    def __init__(self, waiters: RecordWaiters, js: JetStreamContext, requests: KeyValue) -> None:
        self._waiters = waiters
        self._js = js
        self._requests = requests
        self._waits: set[asyncio.Timeout] = set()
        self._stopping = False

    def stop_waiting(self) -> None:
        """End the waits in progress now (each answers the state it reads) and wait no more from now on."""
        self._stopping = True
        now = asyncio.get_running_loop().time()
        for wait in self._waits:
            wait.reschedule(now)

    @contextlib.asynccontextmanager
    async def follow(self, request_id: str) -> AsyncIterator[asyncio.Queue[records_pb2.RequestRecord]]:
        """The writes of the request's record while the context is open; open it before queueing the request."""
        async with self._waiters.watch(request_id) as writes:
            yield writes

    async def wait(
        self,
        writes: asyncio.Queue[records_pb2.RequestRecord],
        api: str,
        request_id: str,
        seconds: float,
        known: bool,
    ) -> records_pb2.RequestRecord | None:
        """The request's record once final, or as it stands after `seconds`; None when there is none.

        The subscription (opened before the request was queued) sees every write of the record, and each
        write carries the whole record: the answer is the record the wait was woken by, never a second read.
        known: the request existed before the subscription (an idempotent retry): read it first.
        """
        last = records_pb2.RequestRecord(id=request_id, api=api, status=records_pb2.REQUEST_STATUS_IN_QUEUE)
        if known:
            try:
                current = await locate.current(self._js, self._requests, api, request_id)
            except Exception as exc:
                # The request is queued: answer what is known rather than an error a client would retry.
                log.warning("request record not read", extra={"id": request_id, "error": repr(exc)})
                current = last
            if current is None or is_final(current.status):
                return current
            last = current
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0 if self._stopping else seconds) as timeout:
                self._waits.add(timeout)
                try:
                    while True:
                        written = await writes.get()
                        if not may_move(last.status, written.status):
                            continue
                        last = written
                        if is_final(written.status):
                            return written
                finally:
                    self._waits.discard(timeout)
        return last
