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
from nats.js.api import DeliverPolicy

from cortado import names
from cortado.v1 import records_pb2

log = logging.getLogger(__name__)


class RecordWaiters:
    """Delivers each write of a request record to the callers that watch its id.

    One watch of the requests bucket serves every waiter, so a thousand long-polls
    cost one consumer, not a thousand. It is a JetStream consumer, not a core
    subscription: JetStream delivers a write only once it is stored, so a reader that
    registers, then reads the bucket, sees every write either in the read or in the
    watch (a core subscriber can get a write before the bucket has it, and miss it).
    """

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._queues: dict[str, set[asyncio.Queue[records_pb2.RequestRecord]]] = defaultdict(set)
        self._sub: Subscription | None = None

    async def start(self) -> None:
        """Subscribe to the request-state subjects."""
        self._sub = await self._js.subscribe(
            names.REQUESTS_SUBJECT_PREFIX + ">",
            stream=f"KV_{names.REQUESTS_BUCKET}",
            cb=self._on_msg,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
            inactive_threshold=3600,
            pending_msgs_limit=1_000_000,
            pending_bytes_limit=1024**3,
        )

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
