"""Cortado's bulk client in the benchmark: Submission/SubmitStream piped into Results/WatchMany, through Envoy.

One client process, one channel, two streams: each id SubmitStream answers is followed on WatchMany at once,
and the run ends with the last final state.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc

from bench.drain import PausedQueue, drained
from cortado.client import Client
from cortado.v1 import records_pb2

PAYLOAD = b'{"x":1}'
CONTENT_TYPE = "application/json"
STREAM_SECONDS = 1800.0
"""Deadline of each stream: far beyond any run, so only a stuck one ends on it."""
STALL_SECONDS = 60.0
"""Once every id is back, the longest WatchMany may go without answering before a bulk run stops waiting."""
CODES = {code.value[0]: code.name for code in grpc.StatusCode}
"""gRPC status names by number (a refused item carries the number)."""


def rate_figures(requests: int, seconds: float, **extra: Any) -> dict[str, Any]:
    """The figures of a run with no per-request latency: count, seconds, rate, and what else it measured."""
    if seconds <= 0:
        raise ValueError(f"a run cannot take {seconds} s")
    return {
        "requests": requests,
        "seconds": round(seconds, 3),
        "requests_per_second": round(requests / seconds, 1),
        **extra,
    }


def mean_batch_size(sizes: list[int]) -> float | None:
    """The mean of the batch sizes handlers reported (rounded to 0.1), None when none did."""
    return round(sum(sizes) / len(sizes), 1) if sizes else None


def _batch_size(result_json: bytes) -> int | None:
    """The `batch_size` a handler put in its result, if any (bench/batch does)."""
    try:
        value = json.loads(result_json).get("batch_size")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def _items(api: str, count: int) -> Iterator[Any]:
    item = Client.request(api, PAYLOAD, CONTENT_TYPE)
    for _ in range(count):
        yield item


def bulk_run(address: str, api: str, count: int, stall: float = STALL_SECONDS) -> dict[str, Any]:
    """`count` no-op requests through SubmitStream, each id followed on WatchMany as it comes back; from the
    first item sent to the last final state WatchMany answered.

    Should WatchMany answer nothing for `stall` seconds once every id is back, the run stops waiting: the
    requests it never answered are read with Get, and counted in `unanswered` (by the status Get gives).
    RuntimeError when an item is refused or a request does not complete.
    """
    refused: Counter[str] = Counter()
    submitted: list[str] = []
    answered: set[str] = set()
    sizes: list[int] = []
    done: Counter[str] = Counter()
    all_back = threading.Event()
    finished = threading.Event()
    stalled = threading.Event()
    started = last = time.perf_counter()
    ids_back = 0.0

    with Client(address) as client:

        def ids() -> Iterator[str]:
            nonlocal ids_back
            for answer in client.submit_many(_items(api, count), timeout=STREAM_SECONDS):
                if answer.id:
                    submitted.append(answer.id)
                    yield answer.id
                else:
                    refused[CODES.get(answer.status.code, str(answer.status.code))] += 1
            ids_back = time.perf_counter()
            all_back.set()

        def watchdog() -> None:
            while not finished.wait(0.2):
                if all_back.is_set() and time.perf_counter() - max(last, ids_back) > stall:
                    stalled.set()
                    client.close()  # ends the WatchMany call (CANCELLED)
                    return

        guard = threading.Thread(target=watchdog, name="bulk-watchdog", daemon=True)
        guard.start()
        try:
            for view in client.results(api, ids(), timeout=STREAM_SECONDS):
                last = time.perf_counter()
                answered.add(view.id)
                done[records_pb2.RequestStatus.Name(view.status)] += 1
                if (size := _batch_size(view.result_json)) is not None:
                    sizes.append(size)
        except grpc.RpcError:
            if not stalled.is_set():
                raise
        finally:
            finished.set()
            guard.join()
    if refused:
        raise RuntimeError(f"SubmitStream refused {sum(refused.values())} of {count} items: {dict(refused)}")
    completed = done.pop("REQUEST_STATUS_COMPLETED", 0)
    if done:
        raise RuntimeError(f"{completed} of {count} requests completed; also seen: {dict(done)}")
    figures = rate_figures(
        completed,
        last - started,
        streams=1,
        submit_seconds=round(ids_back - started, 3),
        mean_batch_size=mean_batch_size(sizes),
    )
    unanswered = [i for i in submitted if i not in answered]
    if unanswered:
        with Client(address) as reader:
            states = Counter(records_pb2.RequestStatus.Name(reader.get(api, i).status) for i in unanswered)
        figures["unanswered"] = {"requests": len(unanswered), "status": dict(states)}
    return figures


def submit_all(address: str, api: str, count: int) -> list[str]:
    """Submit `count` no-op requests over one SubmitStream; their ids (RuntimeError if one was refused)."""
    with Client(address) as client:
        answers = list(client.submit_many(_items(api, count), timeout=STREAM_SECONDS))
    ids = [a.id for a in answers if a.id]
    if len(ids) != count:
        raise RuntimeError(f"SubmitStream accepted {len(ids)} of {count} items")
    return ids


async def executor_drain(nats_url: str, address: str, api: str, count: int) -> dict[str, Any]:
    """`count` requests queued over SubmitStream while the API's consumer is paused, then drained: requests/s at
    the executor (bench/drain.py), and the mean batch size the handler reported."""
    async with PausedQueue(nats_url, api, name="bench-drain") as paused:
        ids = await asyncio.to_thread(submit_all, address, api, count)
        await paused.expect(count)
        await paused.drain()
        stored = await paused.records(ids)
    span = drained(stored)
    sizes = [s for s in (_batch_size(r.result_json) for r in stored) if s is not None]
    return rate_figures(span.requests, span.seconds, mean_batch_size=mean_batch_size(sizes))
