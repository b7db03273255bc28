"""The logs stream: recent handler log lines of every API, kept for a day, streamed to `cortado logs`."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy, DiscardPolicy, StorageType, StreamConfig

from cortado import _names, _nats
from cortado._env import Env

LOGS_MAX_AGE_SECONDS = 24 * 3600.0
LOGS_MAX_BYTES = 1024**3
TAIL_WINDOW = timedelta(hours=1)
CAUGHT_UP_SECONDS = 0.3


async def ensure_logs_stream(js: JetStreamContext) -> None:
    """Create the logs stream if it does not exist (oldest lines go first when it is full)."""
    config = StreamConfig(
        name=_names.LOGS_STREAM,
        subjects=[_names.logs_subject("*")],
        storage=StorageType.FILE,
        max_age=LOGS_MAX_AGE_SECONDS,
        max_bytes=Env().integer("LOGS_MAX_BYTES", LOGS_MAX_BYTES, minimum=1024),
        discard=DiscardPolicy.OLD,
        num_replicas=_nats.replicas(),
    )
    await _nats.ensure_stream(js, config)


async def stream_logs(js: JetStreamContext, api: str, tail: int, follow: bool) -> AsyncIterator[bytes]:
    """The last `tail` lines of the past hour, then (follow) every new line until the consumer stops iterating."""
    start = datetime.now(UTC) - TAIL_WINDOW
    # Lines stored up to now are history (subject to tail); anything later is new.
    history_end = (await js.stream_info(_names.LOGS_STREAM)).state.last_seq
    sub = await js.subscribe(
        _names.logs_subject(api),
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.BY_START_TIME,
        config=ConsumerConfig(opt_start_time=start),
    )
    try:
        recent: deque[bytes] = deque(maxlen=max(tail, 0))
        fresh: list[bytes] = []
        while True:
            try:
                msg = await sub.next_msg(timeout=CAUGHT_UP_SECONDS)
            except TimeoutError:
                break
            if msg.metadata.sequence.stream <= history_end:
                recent.append(msg.data)
            else:
                fresh.append(msg.data)
            if msg.metadata.num_pending == 0:
                break
        for line in recent:
            yield line
        if not follow:
            return
        for line in fresh:
            yield line
        while True:
            try:
                msg = await sub.next_msg(timeout=3600)
            except TimeoutError:
                continue
            yield msg.data
    finally:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await sub.unsubscribe()
