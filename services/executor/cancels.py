"""Cancelled requests as the executor hears of them: announcements, ids announced lately, and the grace period.

Ingest writes a cancelled request's `cancelled` record, then announces its id on `_names.cancel_subject`. The
Dispatcher drops a request it holds but has not sent, drops on arrival one announced before it was delivered (the
ids announced lately are kept in RecentIds), and cancels a running one in the process; a job still running
CANCEL_GRACE_SECONDS later has its process restarted (`stop_when_stuck`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from cortado import _names

log = logging.getLogger(__name__)

CANCEL_GRACE_SECONDS = 10.0
"""Default time a cancelled job has to stop before its process is restarted (CORTADO_CANCEL_GRACE_SECONDS)."""

RECENT_CANCELS = 4096
RECENT_CANCEL_SECONDS = 300.0
"""Cancelled ids remembered (at most this many, for this long) for a message that arrives after its announcement."""


class RecentIds:
    """Ids seen lately: at most `size` of them, each forgotten `ttl` seconds after it was added."""

    def __init__(
        self,
        size: int = RECENT_CANCELS,
        ttl: float = RECENT_CANCEL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._size = size
        self._ttl = ttl
        self._clock = clock
        self._ids: OrderedDict[str, float] = OrderedDict()

    def add(self, item: str) -> None:
        """Remember item from now on (for ttl seconds, or until size newer ones push it out)."""
        now = self._clock()
        self._ids[item] = now
        self._ids.move_to_end(item)
        while len(self._ids) > self._size:
            self._ids.popitem(last=False)
        self._expire(now)

    def __contains__(self, item: object) -> bool:
        self._expire(self._clock())
        return item in self._ids

    def __len__(self) -> int:
        self._expire(self._clock())
        return len(self._ids)

    def _expire(self, now: float) -> None:
        while self._ids:
            oldest, added = next(iter(self._ids.items()))
            if now - added < self._ttl:
                return
            del self._ids[oldest]


async def listen(nc: Client, api: str, on_cancel: Callable[[str], None]) -> Subscription | None:
    """Subscribe to the API's cancel announcements, calling on_cancel with each id; None if that failed.

    An announcement that is not UTF-8 is ignored.
    """

    async def announced(msg: Msg) -> None:
        try:
            request_id = msg.data.decode()
        except UnicodeDecodeError:
            return
        on_cancel(request_id)

    try:
        return await nc.subscribe(_names.cancel_subject(api), cb=announced)
    except Exception as exc:
        # In-progress writes still find cancelled records; only a prefetched request may run anyway.
        log.warning("cancel announcements not heard", extra={"api": api, "error": repr(exc)})
        return None


async def stop_when_stuck(
    grace: float, still_running: Callable[[], bool], on_stuck: Callable[[], None] | None, api: str, request_id: str
) -> None:
    """After grace seconds, call on_stuck (it restarts the process) if the cancelled job is still_running()."""
    await asyncio.sleep(grace)
    if on_stuck is not None and still_running():
        log.warning(
            "a cancelled request's handler did not stop within the grace period (CORTADO_CANCEL_GRACE_SECONDS); "
            "restarting its process",
            extra={"api": api, "id": request_id, "grace_seconds": grace},
        )
        on_stuck()
