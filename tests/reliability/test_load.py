"""Nothing lost (README, "Guarantees"): 10,000 requests from 10 concurrent HTTP clients through Envoy, every one
counted.

The handler logs each run; each request must have run exactly once and read completed with its own result.
The rates are printed (`pytest -s`), never asserted.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import aiohttp
import pytest

from cortado.mesh import LocalMesh
from tests.helpers import eventually
from tests.reliability.conftest import DeployRecording

pytestmark = pytest.mark.reliability

REQUESTS = 10_000
CLIENTS = 10


async def submit_all(base_url: str, api: str) -> dict[str, int]:
    """POST {"n": 0..REQUESTS-1} from CLIENTS concurrent connections; id -> n (every answer must be a 200)."""
    accepted: dict[str, int] = {}
    numbers = iter(range(REQUESTS))
    problems: list[str] = []

    async def client(session: aiohttp.ClientSession) -> None:
        for n in numbers:
            async with session.post(f"/{api}", json={"n": n}) as reply:
                if reply.status != 200:
                    problems.append(f"{reply.status} {await reply.text()}")
                    return
                accepted[(await reply.json())["id"]] = n

    connector = aiohttp.TCPConnector(limit=CLIENTS)
    async with aiohttp.ClientSession(base_url, connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(CLIENTS)))
    assert not problems, problems[:5]
    return accepted


async def read_all(base_url: str, api: str, accepted: dict[str, int]) -> dict[str, list[str]]:
    """GET every request (waiting for it to finish); ids grouped by what they read."""
    outcomes: dict[str, list[str]] = {}
    pending = iter(accepted.items())

    async def client(session: aiohttp.ClientSession) -> None:
        for request_id, n in pending:
            async with session.get(f"/{api}/{request_id}", params={"wait": "30"}) as reply:
                body = await reply.json()
            if reply.status == 200 and body.get("status") == "completed" and body.get("result") == {"n": n}:
                outcome = "completed"
            else:
                outcome = f"{reply.status} {body}"
            outcomes.setdefault(outcome, []).append(request_id)

    connector = aiohttp.TCPConnector(limit=CLIENTS)
    async with aiohttp.ClientSession(base_url, connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(CLIENTS)))
    return outcomes


@pytest.mark.timeout(600)
def test_ten_thousand_requests_from_ten_clients_each_complete_exactly_once(
    mesh: LocalMesh, deploy_recording_api: DeployRecording
) -> None:
    api = deploy_recording_api({"handler": {"max_concurrency": 8}})
    began = time.monotonic()
    accepted = asyncio.run(submit_all(mesh.http_url, api.name))
    submitted = time.monotonic()
    assert len(accepted) == REQUESTS, "two submissions got the same id"

    def all_ran() -> bool:
        return len(api.ends()) >= REQUESTS

    eventually(all_ran, timeout=300, interval=0.5, what=f"{REQUESTS} requests handled")
    handled = time.monotonic()
    outcomes = asyncio.run(read_all(mesh.http_url, api.name, accepted))
    wrong = {outcome: ids for outcome, ids in outcomes.items() if outcome != "completed"}
    assert not wrong, {outcome: (len(ids), ids[:3]) for outcome, ids in wrong.items()}
    assert len(outcomes["completed"]) == REQUESTS

    starts = Counter(request_id for request_id, _ in api.starts())
    assert set(starts) == set(accepted), "a request ran that nobody submitted, or one never ran"
    twice = [request_id for request_id, count in starts.items() if count > 1]
    assert not twice, f"{len(twice)} requests ran more than once: {twice[:5]}"

    print(
        f"\nload: {REQUESTS} requests from {CLIENTS} HTTP clients through Envoy: "
        f"submitted in {submitted - began:.1f}s ({REQUESTS / (submitted - began):.0f} requests/s), "
        f"all handled after {handled - began:.1f}s ({REQUESTS / (handled - began):.0f} requests/s end to end); "
        f"every one completed exactly once"
    )
