"""One subscription to every request-state write, fanned out to the callers waiting on an id."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from cortado import names
from cortado.v1 import records_pb2

log = logging.getLogger(__name__)


class RecordWaiters:
    """Delivers each write of a request record to the callers that watch its id.

    One core NATS subscription serves every waiter, so a thousand long-polls
    cost one subscription, not a thousand watches.
    """

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._queues: dict[str, set[asyncio.Queue[records_pb2.RequestRecord]]] = defaultdict(set)
        self._sub: Subscription | None = None

    async def start(self) -> None:
        """Subscribe to the request-state subjects."""
        self._sub = await self._nc.subscribe(names.REQUESTS_SUBJECT_PREFIX + ">", cb=self._on_msg)

    async def stop(self) -> None:
        """Unsubscribe."""
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def _on_msg(self, msg: Msg) -> None:
        request_id = msg.subject[len(names.REQUESTS_SUBJECT_PREFIX) :]
        queues = self._queues.get(request_id)
        if not queues or not msg.data:
            return
        try:
            record = records_pb2.RequestRecord.FromString(msg.data)
        except Exception:
            log.warning("undecodable record", extra={"id": request_id})
            return
        for queue in queues:
            queue.put_nowait(record)

    @contextlib.asynccontextmanager
    async def watch(self, request_id: str) -> AsyncIterator[asyncio.Queue[records_pb2.RequestRecord]]:
        """A queue that receives every record written for request_id while the context is open."""
        queue: asyncio.Queue[records_pb2.RequestRecord] = asyncio.Queue()
        self._queues[request_id].add(queue)
        try:
            yield queue
        finally:
            queues = self._queues.get(request_id)
            if queues is not None:
                queues.discard(queue)
                if not queues:
                    del self._queues[request_id]
