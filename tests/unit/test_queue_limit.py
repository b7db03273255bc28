"""queue.max_length counts the requests waiting undelivered: ingest's QueueLimits against a fake consumer count."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from cortado import _names
from cortado.v1 import control_pb2, records_pb2
from services.ingest.queuelimit import REFRESH_SECONDS, QueueFullError, QueueLimits
from services.scheduler.registry import queue_ceiling

NORMAL = _names.work_consumer(records_pb2.PRIORITY_NORMAL)


class FakeConsumer:
    """consumer_info answering num_pending (what waits undelivered) of the normal priority's consumer, 0 for the
    others; counts the reads (of the normal one: one per count of the queue)."""

    def __init__(self) -> None:
        self.pending = 0
        self.reads = 0
        self.gate: asyncio.Event | None = None
        self.fail = False

    async def consumer_info(self, stream: str, consumer: str) -> Any:
        if consumer != NORMAL:
            return SimpleNamespace(num_pending=0)
        self.reads += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ConnectionError("no broker")
        return SimpleNamespace(num_pending=self.pending)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def submit(limits: QueueLimits, consumer: FakeConsumer, max_length: int = 2) -> None:
    """Admit and publish one request (the fake queue then counts it as waiting)."""
    async with limits.admitted("api", max_length) as queued:
        await asyncio.sleep(0)
        consumer.pending += 1
        queued()


async def test_requests_running_or_fetched_ahead_do_not_count_only_the_waiting_ones() -> None:
    consumer, clock = FakeConsumer(), Clock()
    limits = QueueLimits(consumer, clock)  # type: ignore[arg-type]
    for _ in range(2):
        await submit(limits, consumer)
    consumer.pending = 0  # both delivered to an executor: one runs, one is held ahead
    await submit(limits, consumer)
    await submit(limits, consumer)
    with pytest.raises(QueueFullError) as full:
        await submit(limits, consumer)
    assert str(full.value) == "the queue of API 'api' is full: 2 requests are waiting, its queue.max_length is 2"
    consumer.pending = 1  # one was delivered
    await submit(limits, consumer)


async def test_below_the_limit_a_submit_does_not_wait_for_a_count_and_a_stale_count_is_read_in_the_background() -> None:
    consumer, clock = FakeConsumer(), Clock()
    consumer.gate = asyncio.Event()
    limits = QueueLimits(consumer, clock)  # type: ignore[arg-type]
    await asyncio.wait_for(submit(limits, consumer, max_length=100), 1)  # the read it started is still blocked
    assert consumer.reads == 1
    await asyncio.wait_for(submit(limits, consumer, max_length=100), 1)
    assert consumer.reads == 1  # one read at a time
    consumer.gate.set()
    await asyncio.sleep(0.01)
    clock.now += REFRESH_SECONDS / 2
    await submit(limits, consumer, max_length=100)
    assert consumer.reads == 1  # fresh enough
    clock.now += REFRESH_SECONDS
    await submit(limits, consumer, max_length=100)
    await asyncio.sleep(0.01)
    assert consumer.reads == 2


async def test_concurrent_submits_never_admit_more_than_the_limit_and_share_one_read() -> None:
    consumer, clock = FakeConsumer(), Clock()
    limits = QueueLimits(consumer, clock)  # type: ignore[arg-type]
    submits = (submit(limits, consumer, max_length=5) for _ in range(50))
    outcomes = await asyncio.gather(*submits, return_exceptions=True)
    assert sum(1 for o in outcomes if o is None) == 5
    assert all(isinstance(o, QueueFullError) for o in outcomes if o is not None)
    assert consumer.pending == 5
    assert consumer.reads <= 3


async def test_a_refused_publish_gives_its_place_back() -> None:
    consumer, clock = FakeConsumer(), Clock()
    limits = QueueLimits(consumer, clock)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        async with limits.admitted("api", 1):
            raise RuntimeError("not queued")
    await submit(limits, consumer, max_length=1)


async def test_a_count_that_cannot_be_read_admits_the_stream_limit_stays_the_ceiling() -> None:
    consumer, clock = FakeConsumer(), Clock()
    limits = QueueLimits(consumer, clock)  # type: ignore[arg-type]
    await submit(limits, consumer, max_length=1)
    consumer.fail = True
    await submit(limits, consumer, max_length=1)


def test_the_stream_holds_max_length_waiting_plus_what_every_replica_may_hold() -> None:
    spec = control_pb2.ApiSpec(queue_max_length=2)
    spec.autoscaling.max_replicas = 3
    spec.autoscaling.max_replica_concurrency = 1024
    assert queue_ceiling(spec) == 2 + 3 * 1024
    spec.queue_max_length = 2**64 - 1
    assert queue_ceiling(spec) == 2**63 - 1
