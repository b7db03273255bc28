"""JetStream pull consumers fed continuously: messages reach the handler process as they arrive.

nats-py's `fetch(n)` keeps waiting for the whole batch once a first message came
(up to its timeout), which stalls a worker whose queue is short. This feed sends
pull requests itself and hands each message over the moment it is delivered.
`LevelFeeds` keeps one feed per priority level of an API's work stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from cortado import _names
from cortado._lifecycle import wait_any
from services.executor.priority import LEVELS

log = logging.getLogger(__name__)

STATUS_HEADER = "Status"
IDLE_HEARTBEAT = "100"


class PullFeed:
    """Keeps at most one pull request open for the API's durable consumer and passes messages to on_message."""

    def __init__(
        self,
        nc: Client,
        stream: str,
        consumer: str,
        on_message: Callable[[Msg], None],
        expires: float = 2.0,
    ) -> None:
        self._nc = nc
        self._subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._on_message = on_message
        self._expires = expires
        self._sub: Subscription | None = None
        self._inbox = ""
        self.outstanding = 0
        """Messages the open pull request may still deliver (0: none open)."""
        self._deadline = 0.0
        self.changed = asyncio.Event()
        """Set whenever a message arrives or the open request ends."""

    async def start(self) -> None:
        """Subscribe the inbox pull requests are answered on."""
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(self._inbox, cb=self._deliver)

    async def stop(self) -> None:
        """Unsubscribe; a message delivered afterwards is redelivered after the consumer's ack wait."""
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def request(self, batch: int) -> None:
        """Ask for up to batch messages, delivered as they become available within `expires` seconds."""
        loop = asyncio.get_running_loop()
        self.outstanding = batch
        self._deadline = loop.time() + self._expires + 1.0
        body = {"batch": batch, "expires": int(self._expires * 1e9)}
        await self._nc.publish(self._subject, json.dumps(body).encode(), reply=self._inbox)

    def expired(self) -> bool:
        """Whether the open request outlived its expiry without an answer (lost, say, across a reconnect)."""
        return self.outstanding > 0 and asyncio.get_running_loop().time() > self._deadline

    def forget(self) -> None:
        """Treat the open request as ended."""
        self.outstanding = 0
        self.changed.set()

    async def _deliver(self, msg: Msg) -> None:
        headers = msg.headers or {}
        status = headers.get(STATUS_HEADER)
        if status == IDLE_HEARTBEAT:
            return
        if status:
            # 404 no messages, 408 request expired, 409 consumer changed: this request is over.
            if status not in ("404", "408"):
                log.warning("pull request ended", extra={"status": status, "description": headers.get("Description")})
            self.forget()
            return
        self.outstanding = max(0, self.outstanding - 1)
        self._on_message(msg)
        self.changed.set()


class LevelFeeds:
    """One PullFeed per priority level of an API's work stream, each passing messages to take(level)."""

    def __init__(self, nc: Client, stream: str, take: Callable[[int], Callable[[Msg], None]]) -> None:
        self._feeds = {level: PullFeed(nc, stream, _names.work_consumer(level), take(level)) for level in LEVELS}

    async def start(self) -> None:
        """Start every level's feed."""
        for feed in self._feeds.values():
            await feed.start()

    async def stop(self) -> None:
        """Stop every level's feed."""
        for feed in self._feeds.values():
            await feed.stop()

    async def request(self, room: Callable[[int], int]) -> bool:
        """Open a pull request for each level with none open, for room(level) messages (none when not positive).

        A request that outlived its expiry counts as ended first. Whether a pull request failed (each is logged).
        """
        failed = False
        for level, feed in self._feeds.items():
            if feed.expired():
                feed.forget()
            if feed.outstanding == 0 and (space := room(level)) > 0:
                try:
                    await feed.request(space)
                except Exception as exc:
                    log.warning("pull request failed", extra={"error": repr(exc)})
                    failed = True
        return failed

    async def wait(self, also: asyncio.Event, timeout: float) -> None:
        """Wait up to timeout seconds for a feed to change (a message, a request ended) or for also to be set."""
        for feed in self._feeds.values():
            feed.changed.clear()
        await wait_any([also, *(feed.changed for feed in self._feeds.values())], timeout)

    async def drain(self) -> None:
        """Wait until no open pull request may still deliver (each has ended or outlived its expiry)."""
        for feed in self._feeds.values():
            while feed.outstanding and not feed.expired():
                feed.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(feed.changed.wait(), 0.5)
