"""A JetStream pull consumer fed continuously: messages reach the handler process as they arrive.

nats-py's `fetch(n)` keeps waiting for the whole batch once a first message came
(up to its timeout), which stalls a worker whose queue is short. This feed sends
pull requests itself and hands each message over the moment it is delivered.
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
