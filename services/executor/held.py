"""A request the executor holds for its handler process, from JetStream's delivery to the ack, and its message."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from nats.aio.msg import Msg

from cortado.v1 import records_pb2

TRACE_HEADERS = ("traceparent", "tracestate")
"""The message headers that carry a request's trace context (to the handler process, and into a dead letter)."""


@dataclass
class Held:
    """A request this executor holds for the process: delivered by JetStream, not yet acknowledged."""

    msg: Msg
    item: records_pb2.WorkItem
    since: float
    level: int = records_pb2.PRIORITY_NORMAL
    """The priority whose consumer delivered it."""
    payload: bytes = b""
    revision: int = 0
    """The record's revision read at a redelivery (0 on a first delivery)."""
    attempts: int = 1
    started: records_pb2.RequestRecord = field(default_factory=records_pb2.RequestRecord)
    marked: asyncio.Task[int] | None = None
    """The in_progress write, due IN_PROGRESS_AFTER seconds after the job is sent; its result is the revision."""
    marking: bool = False
    """The in_progress write has begun (it is no longer just waiting for its moment)."""
    finished: bool = False
    """The in_progress write found a final record: a delivery the broker repeated (it lost the ack in a crash),
    or a request cancelled meanwhile."""
    cancelled: bool = False
    """Its request was cancelled (its record is final): it is dropped, or stopped in the process."""
    stopper: asyncio.Task[None] | None = None
    """Restarts the process if the cancelled job still runs after the grace period."""


def trace_headers(msg: Msg) -> dict[str, str]:
    """The trace context headers msg carries (none when it has no headers)."""
    headers = msg.headers or {}
    return {k: headers[k] for k in TRACE_HEADERS if k in headers}


async def nak_msg(msg: Msg, delay: float | None = None) -> None:
    """Hand msg back for redelivery after delay seconds (at once with None); a failure is ignored."""
    with contextlib.suppress(Exception):
        await msg.nak(delay=delay)


async def term_msg(msg: Msg) -> None:
    """Tell JetStream never to deliver msg again; a failure is ignored."""
    with contextlib.suppress(Exception):
        await msg.term()


async def heartbeat(holding: Callable[[], Iterable[Held]], ack_wait: float) -> None:
    """Until cancelled, every ack_wait / 3 seconds, tell JetStream that each request held that long is still worked on.

    So that JetStream's ack timer does not redeliver the request of a long handler; a failure is ignored.
    """
    interval = ack_wait / 3
    while True:
        await asyncio.sleep(interval)
        now = asyncio.get_running_loop().time()
        for held in list(holding()):
            if now - held.since >= interval * 0.9:
                with contextlib.suppress(Exception):
                    await held.msg.in_progress()
