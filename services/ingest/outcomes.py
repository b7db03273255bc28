"""Waiting for the outcome of a request ingest just queued (`POST /<api>?wait=`, Submit's `wait`).

Only a submit that waits pays for it: a core NATS subscription to its own record's subject
(`$KV.cortado_requests.<id>`), opened before the request is queued, so no write of the record can come
before it. A write seen there is only a hint: the answer is always read back from the bucket, exactly
what `GET /<api>/<id>` would read (a core subscriber also sees writes JetStream then refused, such as a
losing compare-and-set), and a final read at the end of the wait covers a write the subscription missed
(a reconnect, or an idempotent retry of a request that was already running).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from nats.aio.client import Client
from nats.aio.subscription import Subscription
from nats.js.kv import KeyValue

from cortado import lookup, names, records
from cortado.v1 import records_pb2

log = logging.getLogger(__name__)


class Outcomes:
    """Waits on request records; stop_waiting() ends every wait at once (the service is stopping)."""

    def __init__(self, nc: Client, requests: KeyValue) -> None:
        self._nc = nc
        self._js = nc.jetstream()
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
    async def follow(self, request_id: str) -> AsyncIterator[Subscription]:
        """The writes of the request's record while the context is open; open it before queueing the request."""
        sub = await self._nc.subscribe(names.REQUESTS_SUBJECT_PREFIX + request_id)
        try:
            yield sub
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def wait(
        self, writes: Subscription, api: str, request_id: str, seconds: float, known: bool
    ) -> records_pb2.RequestRecord | None:
        """The request's record once final, or as it stands after `seconds`; None when there is none.

        The subscription (opened before the request was queued) sees every write of the record, and each
        write carries the whole record: the answer is the record the wait was woken by, never a second read.
        known: the request existed before the subscription (an idempotent retry): read it first.
        """
        last = records_pb2.RequestRecord(id=request_id, api=api, status=records_pb2.REQUEST_STATUS_IN_QUEUE)
        if known:
            try:
                current = await lookup.current(self._js, self._requests, api, request_id)
            except Exception as exc:
                # The request is queued: answer what is known rather than an error a client would retry.
                log.warning("request record not read", extra={"id": request_id, "error": repr(exc)})
                current = last
            if current is None or records.is_final(current.status):
                return current
            last = current
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0 if self._stopping else seconds) as timeout:
                self._waits.add(timeout)
                try:
                    while True:
                        msg = await writes.next_msg(timeout=None)
                        try:
                            written = records_pb2.RequestRecord.FromString(msg.data)
                        except Exception:
                            continue
                        if not msg.data or not records.may_move(last.status, written.status):
                            continue
                        last = written
                        if records.is_final(written.status):
                            return written
                finally:
                    self._waits.discard(timeout)
        return last
