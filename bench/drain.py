"""Requests/s at the executor: queue requests while an API's consumer is paused, then time their draining.

While the executor drains the queue nothing else runs: no client submits or polls for results. The end is
seen in the consumer's state (nothing pending, nothing unacknowledged: a request is acknowledged after its
result is written), and the figures come from the request records: from the earliest `started_at` (the
handler process takes up a request it pulled; the drain begins with nothing prefetched, so the first one
marks the first pull) to the latest `finished_at` (the outcome is ready, just before the result write).
Used by `make bench` (the batch feed) and by scripts/gpu_check.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import nats
from google.protobuf import timestamp_pb2

from cortado import _names
from cortado.v1 import records_pb2

HOLD = datetime.timedelta(minutes=10)
"""The longest an API stays paused: should the measuring process die, the API resumes by itself."""

CONSUMERS = tuple(_names.work_consumer(priority) for priority in _names.PRIORITIES)
"""The API's consumers, one per priority: all of them are paused, counted and resumed together."""

RECORD_READS = 64
"""Request records read at once after the drain."""


class DrainError(RuntimeError):
    """The queue did not hold what was submitted, did not drain in time, or a request did not complete."""


def _rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds(ts: timestamp_pb2.Timestamp) -> float:
    return float(ts.seconds) + ts.nanos / 1e9


@dataclass(frozen=True)
class Drained:
    """The span of a drain, from the request records: wall-clock times (seconds since the epoch)."""

    requests: int
    first_started: float
    last_finished: float

    @property
    def seconds(self) -> float:
        """From the first request taken up to the last outcome ready."""
        return self.last_finished - self.first_started

    @property
    def rate(self) -> float:
        """Requests per second over that span (0 for an empty span)."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def drained(stored: Sequence[records_pb2.RequestRecord]) -> Drained:
    """The span of the drained requests' records; DrainError when one did not complete."""
    if not stored:
        raise DrainError("no requests were drained")
    for record in stored:
        if record.status != records_pb2.REQUEST_STATUS_COMPLETED:
            raise DrainError(f"request {record.id} did not complete: {record.error.type}: {record.error.message}")
    first = min(_seconds(r.started_at) for r in stored)
    last = max(_seconds(r.finished_at) for r in stored)
    return Drained(len(stored), first, last)


class PausedQueue:
    """An API's work queue held still: what is submitted inside `async with` waits there until drain().

    Leaving the block resumes the consumer if drain() did not (a failed submit leaves no API paused).
    """

    def __init__(self, nats_url: str, api: str, name: str = "cortado-drain") -> None:
        self._url = nats_url
        self._api = api
        self._stream = _names.work_stream(api)
        self._name = name
        self._nc: Any = None
        self._js: Any = None
        self._paused = False

    async def __aenter__(self) -> PausedQueue:
        self._nc = await nats.connect(self._url, name=self._name)
        try:
            self._js = self._nc.jetstream()
            until = datetime.datetime.now(datetime.UTC) + HOLD
            for consumer in CONSUMERS:
                await self._js.pause_consumer(self._stream, consumer, _rfc3339(until))
            self._paused = True
        except BaseException:
            await self._nc.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self._paused:
                for consumer in CONSUMERS:
                    with contextlib.suppress(Exception):
                        await self._js.resume_consumer(self._stream, consumer)
        finally:
            await self._nc.close()

    async def expect(self, count: int) -> None:
        """DrainError unless exactly `count` requests wait in the queue."""
        queued, _ = await self._depth()
        if queued != count:
            raise DrainError(f"{count} requests were submitted but {queued} wait in {self._api}'s queue")

    async def drain(self, timeout: float = 600.0) -> float:
        """Resume the consumer and wait until every request is done and acknowledged; the seconds it took."""
        for consumer in CONSUMERS:
            await self._js.resume_consumer(self._stream, consumer)
        self._paused = False
        started = time.monotonic()
        while True:
            queued, in_flight = await self._depth()
            if not queued and not in_flight:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise DrainError(f"{self._api} did not drain its queue in {timeout:.0f}s")
            await asyncio.sleep(0.1)

    async def _depth(self) -> tuple[int, int]:
        """Requests waiting undelivered, and delivered but not acknowledged, over every priority's consumer."""
        queued = in_flight = 0
        for consumer in CONSUMERS:
            info = await self._js.consumer_info(self._stream, consumer)
            queued += int(info.num_pending or 0)
            in_flight += int(info.num_ack_pending or 0)
        return queued, in_flight

    async def records(self, ids: Sequence[str]) -> list[records_pb2.RequestRecord]:
        """The stored records of the requests named, in that order."""
        kv = await self._js.key_value(_names.REQUESTS_BUCKET)
        limit = asyncio.Semaphore(RECORD_READS)

        async def record(request_id: str) -> records_pb2.RequestRecord:
            async with limit:
                entry = await kv.get(request_id)
            return records_pb2.RequestRecord.FromString(entry.value or b"")

        return list(await asyncio.gather(*(record(i) for i in ids)))
