"""`queue.max_length`: how many of an API's requests may wait in its queue, not yet delivered to an executor.

JetStream's own limit (the stream's `max_msgs`, discard new) counts every message the stream holds, and a
work queue holds a request until its outcome is recorded: the ones running and those an executor fetched
ahead count too. So ingest admits a request only while fewer than `max_length` wait undelivered, from the
API's consumer (`num_pending`); the stream's limit stays as a ceiling above it (the scheduler sets it to
`max_length` plus what the API's replicas may hold).

Asking the consumer on every submit would cost a round trip each. Instead each API keeps the last count and,
on top of it, every request admitted since (the ones still being published, and those published while the
count was being read): an estimate that can only be too high within one ingest, since deliveries lower the
real count. A submit that the estimate would refuse reads the count again (one read at a time per API, shared
by the submits waiting on it) and is refused only on that fresh count. The count is also read again in the
background once it is a second old, which bounds what another ingest's submits can add unseen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from nats.js import JetStreamContext

from cortado import _names

log = logging.getLogger(__name__)

REFRESH_SECONDS = 1.0
"""How old an API's queue count may get before it is read again (in the background) on the next submit."""


@dataclass
class _Queue:
    """What ingest knows of one API's queue."""

    pending: int = 0
    """Undelivered requests when the count was last read."""
    extra: int = 0
    """Requests admitted since that are not in `pending` (or may not be): publishing, or published during the read."""
    publishing: int = 0
    read_at: float = float("-inf")
    reading: asyncio.Task[bool] | None = None
    published_while_reading: int = 0

    @property
    def estimate(self) -> int:
        return self.pending + self.extra


class QueueFullError(Exception):
    """The API's queue holds `max_length` undelivered requests."""

    def __init__(self, api: str, waiting: int, max_length: int) -> None:
        super().__init__(
            f"the queue of API {api!r} is full: {waiting} requests are waiting, its queue.max_length is {max_length}"
        )


class QueueLimits:
    """Admits an API's requests while fewer than its `queue.max_length` wait undelivered."""

    def __init__(self, js: JetStreamContext, clock: Callable[[], float] = time.monotonic) -> None:
        self._js = js
        self._clock = clock
        self._queues: dict[str, _Queue] = {}

    @contextlib.asynccontextmanager
    async def admitted(self, api: str, max_length: int) -> AsyncIterator[Callable[[], None]]:
        """Hold a place in the API's queue for the block, which publishes the request; QueueFullError when full.

        The block calls the yielded function once the request is queued; a block that ends without calling it
        (an exception, a refusal) gives the place back.
        """
        queue = self._queues.setdefault(api, _Queue())
        # A count that cannot be read admits the request: the stream's own limit stays as the ceiling.
        if queue.estimate >= max_length and await self._read(api, queue) and queue.estimate >= max_length:
            raise QueueFullError(api, queue.estimate, max_length)
        elif self._clock() - queue.read_at > REFRESH_SECONDS and queue.reading is None:
            queue.reading = asyncio.create_task(self._count(api, queue))
        queue.extra += 1
        queue.publishing += 1
        published = False

        def done() -> None:
            nonlocal published
            published = True

        try:
            yield done
        finally:
            queue.publishing -= 1
            if not published:
                queue.extra -= 1
            elif queue.reading is not None:
                queue.published_while_reading += 1

    async def _read(self, api: str, queue: _Queue) -> bool:
        """Read the API's count now (joining a read in progress); whether it could be read."""
        if queue.reading is None:
            queue.reading = asyncio.create_task(self._count(api, queue))
        return await asyncio.shield(queue.reading)

    async def _count(self, api: str, queue: _Queue) -> bool:
        queue.published_while_reading = 0
        try:
            # queue.max_length applies to every priority together.
            pending = 0
            for priority in _names.PRIORITIES:
                info = await self._js.consumer_info(_names.work_stream(api), _names.work_consumer(priority))
                pending += int(info.num_pending or 0)
        except Exception as exc:
            log.warning("queue length not read", extra={"api": api, "error": repr(exc)})
            return False
        finally:
            queue.reading = None
        queue.pending = pending
        # What may not be in the count: requests still being published, and those published during the read.
        queue.extra = queue.publishing + queue.published_while_reading
        queue.read_at = self._clock()
        return True
