"""One subscription to every request-state write, fanned out to the callers waiting on an id."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import DeliverPolicy

from cortado import names
from cortado.v1 import records_pb2

log = logging.getLogger(__name__)

Listener = Callable[[records_pb2.RequestRecord], None]


class Followed:
    """The ids one caller follows with RecordWaiters.follow: add and drop ids while the context is open."""

    def __init__(self, waiters: RecordWaiters, listener: Listener) -> None:
        self._waiters = waiters
        self._listener = listener
        self.ids: set[str] = set()

    def add(self, request_id: str) -> None:
        """From now on, every write of request_id reaches the listener."""
        if request_id not in self.ids:
            self.ids.add(request_id)
            self._waiters._listeners[request_id].add(self._listener)

    def drop(self, request_id: str) -> None:
        """Stop following request_id."""
        if request_id in self.ids:
            self.ids.discard(request_id)
            self._waiters._forget(request_id, self._listener)


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
        self._listeners: dict[str, set[Listener]] = defaultdict(set)
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
        listeners = self._listeners.get(request_id)
        if not listeners or not msg.data:
            return
        try:
            record = records_pb2.RequestRecord.FromString(msg.data)
        except Exception:
            log.warning("undecodable record", extra={"id": request_id})
            return
        for listener in list(listeners):
            listener(record)

    def _forget(self, request_id: str, listener: Listener) -> None:
        listeners = self._listeners.get(request_id)
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                del self._listeners[request_id]

    @contextlib.asynccontextmanager
    async def watch(self, request_id: str) -> AsyncIterator[asyncio.Queue[records_pb2.RequestRecord]]:
        """A queue that receives every record written for request_id while the context is open."""
        queue: asyncio.Queue[records_pb2.RequestRecord] = asyncio.Queue()
        async with self.follow(queue.put_nowait) as followed:
            followed.add(request_id)
            yield queue

    @contextlib.asynccontextmanager
    async def follow(self, listener: Listener) -> AsyncIterator[Followed]:
        """Calls listener(record) for every write of each id added to the yielded Followed, until the context ends.

        One listener may follow any number of ids (Results/WatchMany), each still costing no subscription.
        """
        followed = Followed(self, listener)
        try:
            yield followed
        finally:
            for request_id in followed.ids:
                self._forget(request_id, listener)
