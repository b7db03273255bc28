"""The HTTP client both Cortado and the floor are measured with: the same requests, connections and timing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import aiohttp
import uvloop

from bench.measure import run_figures

JSON = {"Content-Type": "application/json"}
PAYLOAD = b'{"x":1}'
WAIT_SECONDS = 30
"""`?wait=` of each fetch (and of a one-call submit): the longest a call waits for the result."""

T = TypeVar("T")

Trip = Callable[[aiohttp.ClientSession, str], Awaitable[tuple[float, int]]]
"""One measured request: seconds it took, and the fetches that came back without the result first (+1)."""


class OneCallUnsupportedError(RuntimeError):
    """`POST /<api>?wait=` answered only an id: the server does not wait for results in the submit."""


def session(base_url: str, connections: int) -> aiohttp.ClientSession:
    """One keep-alive connection per client, as separate HTTP clients would have."""
    connector = aiohttp.TCPConnector(limit=connections)
    return aiohttp.ClientSession(base_url=base_url, connector=connector, timeout=aiohttp.ClientTimeout(total=120))


async def _fetch_until_done(client: aiohttp.ClientSession, api: str, request_id: str) -> int:
    """GET /<api>/<id>?wait= until the request is completed; how many fetches it took."""
    fetches = 0
    while True:
        fetches += 1
        async with client.get(f"/{api}/{request_id}", params={"wait": str(WAIT_SECONDS)}) as got:
            got.raise_for_status()
            body = await got.json()
        if body["status"] == "completed":
            return fetches
        if body["status"] == "failed":
            raise RuntimeError(f"request {request_id} failed: {body}")


async def round_trip(client: aiohttp.ClientSession, api: str) -> tuple[float, int]:
    """Submit one request and fetch its result (long-polling with `?wait=`); seconds it took, and the fetches."""
    started = time.perf_counter()
    async with client.post(f"/{api}", data=PAYLOAD, headers=JSON) as reply:
        reply.raise_for_status()
        request_id = (await reply.json())["id"]
    fetches = await _fetch_until_done(client, api, request_id)
    return time.perf_counter() - started, fetches


async def one_call(client: aiohttp.ClientSession, api: str) -> tuple[float, int]:
    """`POST /<api>?wait=`: submit and get the result in one call (fetching it only if that wait ran out).

    The fetch count is 1 when the submit brought the result, 1 + the fetches otherwise.
    """
    started = time.perf_counter()
    async with client.post(f"/{api}", data=PAYLOAD, headers=JSON, params={"wait": str(WAIT_SECONDS)}) as reply:
        reply.raise_for_status()
        body = await reply.json()
    status = body.get("status")
    if status is None:
        raise OneCallUnsupportedError(f"POST /{api}?wait= answered {body}")
    if status == "failed":
        raise RuntimeError(f"request {body.get('id')} failed: {body}")
    fetches = 1 if status == "completed" else 1 + await _fetch_until_done(client, api, body["id"])
    return time.perf_counter() - started, fetches


async def supports_one_call(base_url: str, api: str) -> bool:
    """Whether `POST /<api>?wait=` answers the result (not just an id)."""
    async with session(base_url, 1) as client:
        try:
            await one_call(client, api)
        except (OneCallUnsupportedError, aiohttp.ClientResponseError):
            return False
    return True


def figures_of(timings: list[tuple[float, int]], seconds: float, concurrency: int) -> dict[str, Any]:
    """run_figures(), and how many requests needed more than one fetch."""
    figures = run_figures([t for t, _ in timings], seconds, concurrency)
    # A fetch that returns without the result means a whole ?wait= ran out first: worth seeing on its own.
    figures["expired_waits"] = sum(1 for _, fetches in timings if fetches > 1)
    return figures


async def concurrent_run(
    base_url: str, api: str, requests: int, concurrency: int, trip: Trip = round_trip
) -> dict[str, Any]:
    """`requests` round trips from `concurrency` clients at once, until every result is fetched."""
    remaining = iter(range(requests))
    timings: list[tuple[float, int]] = []

    async def client_loop(client: aiohttp.ClientSession) -> None:
        for _ in remaining:
            timings.append(await trip(client, api))

    async with session(base_url, concurrency) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return figures_of(timings, elapsed, concurrency)


async def sequential_run(base_url: str, api: str, requests: int, trip: Trip = round_trip) -> dict[str, Any]:
    """`requests` round trips one after the other, from one client."""
    async with session(base_url, 1) as client:
        started = time.perf_counter()
        timings = [await trip(client, api) for _ in range(requests)]
        elapsed = time.perf_counter() - started
    return figures_of(timings, elapsed, 1)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a client coroutine on a fresh uvloop event loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def measured_run(
    base_url: str, api: str, requests: int, concurrency: int, trip: Trip = round_trip
) -> Callable[[], dict[str, Any]]:
    """A run for measure.with_cpu: concurrent (or, with concurrency 1, sequential) round trips."""
    if concurrency == 1:
        return lambda: run_async(sequential_run(base_url, api, requests, trip))
    return lambda: run_async(concurrent_run(base_url, api, requests, concurrency, trip))
