"""Request-state writes delivered to the callers waiting on an id: a subscription per followed id."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.kv import KeyValue

from cortado import _names
from cortado.records.locate import stored
from cortado.v1 import records_pb2

log = logging.getLogger(__name__)

Listener = Callable[[records_pb2.RequestRecord], None]

LATE_CHECK_SECONDS = 0.1
"""How long after its subscription opened a followed record that has had no write since is read again."""


class Followed:
    """The ids one caller follows with RecordWaiters.follow: add and drop ids while the context is open."""

    def __init__(self, waiters: RecordWaiters, listener: Listener) -> None:
        self._waiters = waiters
        self._listener = listener
        self.ids: set[str] = set()

    async def add(self, request_id: str) -> None:
        """From now on, every write of request_id reaches the listener (read the record after this returns)."""
        if request_id not in self.ids:
            self.ids.add(request_id)
            await self._waiters._listen(request_id, self._listener)

    def drop(self, request_id: str) -> None:
        """Stop following request_id."""
        if request_id in self.ids:
            self.ids.discard(request_id)
            self._waiters._forget(request_id, self._listener)


class RecordWaiters:
    """Delivers each write of a request record to the callers that watch its id.

    A record is followed with a core subscription to its own subject, open only while
    someone waits on it: a results instance receives the writes of the requests its
    callers wait for, and nothing of the others (no stream of every write to keep up
    with, however many requests go through). A caller subscribes, then reads the
    bucket: NATS handles a connection's subscription before the read that follows it,
    so a write lands in the read or reaches the subscription — except one NATS received just before the
    subscription and stored just after the read, which the late check (a read 0.1 s on) catches.
    """

    def __init__(self, nc: Client, requests: KeyValue) -> None:
        self._nc = nc
        self._requests = requests
        self._listeners: dict[str, set[Listener]] = defaultdict(set)
        self._subs: dict[str, Subscription | None] = {}
        """Per followed id, its subscription (None while it is being opened)."""

    async def start(self) -> None:
        """Nothing to set up: subscriptions open per followed id."""

    async def stop(self) -> None:
        """Close every subscription."""
        subs, self._subs = list(self._subs.values()), {}
        for sub in subs:
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def _listen(self, request_id: str, listener: Listener) -> None:
        self._listeners[request_id].add(listener)
        if request_id in self._subs:
            return
        self._subs[request_id] = None
        sub = await self._nc.subscribe(_names.REQUESTS_SUBJECT_PREFIX + request_id, cb=self._on_msg)
        if request_id in self._subs and self._subs[request_id] is None:
            self._subs[request_id] = sub
            task = asyncio.get_running_loop().create_task(self._check_late(request_id, sub))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        else:
            # Forgotten (and perhaps followed again) while it opened: the newer state wins.
            _unsubscribe_later(sub)

    async def _check_late(self, request_id: str, sub: Subscription) -> None:
        """Read the record again a moment after its subscription opened, unless a write reached it meanwhile.

        NATS delivers a write to subscribers as it arrives and stores it a moment later: a write that arrived
        just before the subscription and was not stored yet when the caller read escapes both. Such a write is
        the last one the caller would see before the next (a final record: none ever follows), so a
        subscription that has received nothing is read again once, when the moment is surely past.
        """
        await asyncio.sleep(LATE_CHECK_SECONDS)
        if self._subs.get(request_id) is not sub or sub.delivered:
            return
        with contextlib.suppress(Exception):
            record = await stored(self._requests, request_id)
            listeners = self._listeners.get(request_id)
            if record is not None and listeners:
                for listener in list(listeners):
                    listener(record)

    async def _on_msg(self, msg: Msg) -> None:
        request_id = msg.subject[len(_names.REQUESTS_SUBJECT_PREFIX) :]
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
        if listeners is None:
            return
        listeners.discard(listener)
        if listeners:
            return
        del self._listeners[request_id]
        sub = self._subs.pop(request_id, None)
        if sub is not None:
            _unsubscribe_later(sub)

    @contextlib.asynccontextmanager
    async def watch(self, request_id: str) -> AsyncIterator[asyncio.Queue[records_pb2.RequestRecord]]:
        """A queue that receives every record written for request_id while the context is open."""
        queue: asyncio.Queue[records_pb2.RequestRecord] = asyncio.Queue()
        async with self.follow(queue.put_nowait) as followed:
            await followed.add(request_id)
            yield queue

    @contextlib.asynccontextmanager
    async def follow(self, listener: Listener) -> AsyncIterator[Followed]:
        """Calls listener(record) for every write of each id added to the yielded Followed, until the context ends.

        One listener may follow any number of ids (Results/WatchMany).
        """
        followed = Followed(self, listener)
        try:
            yield followed
        finally:
            for request_id in followed.ids:
                self._forget(request_id, listener)


def _unsubscribe_later(sub: Subscription) -> None:
    task = asyncio.get_running_loop().create_task(sub.unsubscribe())
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
