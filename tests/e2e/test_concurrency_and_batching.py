"""max_concurrency (threads for plain handlers, tasks for async ones) and dynamic batching with handle_batch."""

from __future__ import annotations

import time

import httpx

from cortado.client import SchedulerClient
from tests.meshcalls import Deploy, result, submit

CONCURRENT_PLAIN = """
import threading
import time

lock = threading.Lock()
running = 0
peak = 0


class Handler:
    def handle_async(self, payload):
        global running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.3)
        with lock:
            running -= 1
        return {"peak": peak, "thread": threading.current_thread().name}
"""

CONCURRENT_ASYNC = """
import asyncio

running = 0
peak = 0


class Handler:
    async def handle_async(self, payload):
        global running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.3)
        running -= 1
        return {"peak": peak}
"""

BATCHING = """
class Handler:
    def handle_batch(self, payloads, request_ids):
        if any(p.get("boom") for p in payloads):
            raise ValueError("a poisoned batch")
        return [
            {"n": p["n"], "batch_size": len(payloads), "id": rid}
            if not p.get("bad") else ["not", "a", "dict"]
            for p, rid in zip(payloads, request_ids)
        ]
"""


def test_a_plain_handler_runs_up_to_max_concurrency_requests_at_once_in_threads(
    deploy: Deploy, http: httpx.Client
) -> None:
    api = deploy(CONCURRENT_PLAIN, api={"handler": {"max_concurrency": 4}})
    ids = [submit(http, api, json={}) for _ in range(8)]
    bodies = [result(http, api, request_id) for request_id in ids]
    peaks = [b["result"]["peak"] for b in bodies]
    assert max(peaks) == 4
    assert all(b["result"]["thread"].startswith("handler") for b in bodies)


def test_an_async_handler_runs_up_to_max_concurrency_requests_at_once_as_tasks(
    deploy: Deploy, http: httpx.Client
) -> None:
    api = deploy(CONCURRENT_ASYNC, api={"handler": {"max_concurrency": 3}})
    ids = [submit(http, api, json={}) for _ in range(6)]
    assert max(result(http, api, request_id)["result"]["peak"] for request_id in ids) == 3


def test_the_default_concurrency_is_one(deploy: Deploy, http: httpx.Client) -> None:
    api = deploy(CONCURRENT_ASYNC)
    ids = [submit(http, api, json={}) for _ in range(3)]
    assert max(result(http, api, request_id)["result"]["peak"] for request_id in ids) == 1


def test_requests_are_batched_up_to_max_batch_size_and_each_gets_its_own_result(
    deploy: Deploy, http: httpx.Client
) -> None:
    api = deploy(BATCHING, api={"handler": {"max_batch_size": 4, "batch_interval": "500ms"}})
    ids = [submit(http, api, json={"n": n}) for n in range(8)]
    bodies = [result(http, api, request_id) for request_id in ids]
    assert [b["result"]["n"] for b in bodies] == list(range(8))
    assert [b["result"]["id"] for b in bodies] == ids
    sizes = [b["result"]["batch_size"] for b in bodies]
    assert max(sizes) > 1
    assert max(sizes) <= 4


def test_a_lone_request_waits_at_most_the_batch_interval(deploy: Deploy, http: httpx.Client) -> None:
    api = deploy(BATCHING, api={"handler": {"max_batch_size": 8, "batch_interval": "100ms"}})
    body = result(http, api, submit(http, api, json={"n": 1}))
    assert body["result"]["batch_size"] == 1


def test_in_a_batch_each_request_gets_its_own_status_result_or_error(deploy: Deploy, http: httpx.Client) -> None:
    api = deploy(BATCHING, api={"handler": {"max_batch_size": 4, "batch_interval": "500ms"}})
    good, bad = submit(http, api, json={"n": 1}), submit(http, api, json={"n": 2, "bad": True})
    assert result(http, api, good)["status"] == "completed"
    failed = result(http, api, bad)
    assert failed["status"] == "failed"
    assert failed["error"]["type"] == "InvalidResult"
    assert "list" in failed["error"]["message"]
    poisoned = result(http, api, submit(http, api, json={"n": 3, "boom": True}))
    assert poisoned["error"] == {"type": "ValueError", "message": "a poisoned batch"}


SLOW = """
import time


class Handler:
    def handle_async(self, payload):
        time.sleep(0.5)
        return {"ok": True}
"""


def test_a_replica_never_holds_more_than_max_replica_concurrency_requests(
    deploy: Deploy, http: httpx.Client, scheduler: SchedulerClient
) -> None:
    # Cortex's max_replica_concurrency, at the least Cortado accepts (2 x max_concurrency x max_batch_size):
    # what one replica holds, running or fetched ahead, stays within it; the rest waits in the API's queue.
    api = deploy(
        SLOW, {"handler": {"max_concurrency": 2}, "autoscaling": {"max_replicas": 1, "max_replica_concurrency": 4}}
    )
    ids = [submit(http, api, json={}) for _ in range(16)]
    held, queued = set(), set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = scheduler.describe(api)
        held.add(status.in_flight)
        queued.add(status.queued)
        if not status.queued and not status.in_flight:
            break
        time.sleep(0.05)
    assert max(held) == 4, held  # the replica took as much as allowed, and no more
    assert max(queued) >= 8, queued
    assert all(result(http, api, request_id)["status"] == "completed" for request_id in ids)
