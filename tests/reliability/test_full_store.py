"""A full store: submits keep being accepted, handlers never loop hot, and nothing accepted is lost.

The requests bucket is given a few KiB (`CORTADO_REQUESTS_MAX_BYTES`), so outcomes soon cannot be written.
The executor retries each write, then hands the request back with a growing delay (not at once, again and
again); after `CORTADO_MAX_DELIVERIES` deliveries without an outcome the request fails with a clear error.
Once the store has room again, every accepted request ends with exactly one final record.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import grpc
import nats
import pytest

from cortado import _names
from tests.faults import final
from tests.meshcalls import submit
from tests.reliability.support import Private, private_mesh

pytestmark = pytest.mark.reliability

MAX_DELIVERIES = 3
REQUESTS = 30
FULL_FOR_SECONDS = 15


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Private]:
    with private_mesh(
        tmp_path_factory.mktemp("full"),
        CORTADO_REQUESTS_MAX_BYTES="4096",
        CORTADO_MAX_DELIVERIES=str(MAX_DELIVERIES),
    ) as running:
        yield running


def make_room(private: Private) -> None:
    """Lift the requests bucket's byte limit, as an operator would (with the admin credentials)."""

    async def lift() -> None:
        nc = await nats.connect(private.mesh.admin_nats_url)
        try:
            js = nc.jetstream()
            info = await js.stream_info(f"KV_{_names.REQUESTS_BUCKET}")
            info.config.max_bytes = -1
            await js.update_stream(info.config)
        finally:
            await nc.close()

    asyncio.run(lift())


def test_a_full_requests_store_neither_loops_nor_loses_an_accepted_request(private: Private) -> None:
    api = private.deploy()
    http = private.http
    accepted = [submit(http, api.name, json={"n": n, "pad": "x" * 200}) for n in range(REQUESTS)]
    time.sleep(FULL_FOR_SECONDS)

    states = {i: http.get(f"/{api.name}/{i}").json()["status"] for i in accepted}
    assert any(s in ("in_queue", "in_progress") for s in states.values()), states  # the store did fill up
    runs = Counter(i for i, _ in api.starts())
    # Each request's outcome is retried for ~8 s before it goes back, then with a growing delay: a few runs
    # in FULL_FOR_SECONDS, not the hundreds of a request handed back at once, again and again.
    assert max(runs.values()) <= 3, runs
    # Submits go on being accepted while outcomes cannot be written (the queue is its own store).
    accepted.append(submit(http, api.name, json={"n": REQUESTS}))

    make_room(private)
    finals = {i: final(http, api.name, i, timeout=120) for i in accepted}
    assert all(body["status"] in ("completed", "failed") for body in finals.values()), finals
    gave_up = [body for body in finals.values() if body["status"] == "failed"]
    for body in gave_up:
        assert body["error"]["type"] == "DeliveryLimitExceeded", body
        assert f"giving up after {MAX_DELIVERIES} deliveries (CORTADO_MAX_DELIVERIES)" in body["error"]["message"]
    completed = [body for body in finals.values() if body["status"] == "completed"]
    assert completed, finals
    # Exactly one final record each: it reads the same however often it is read.
    for request_id, body in finals.items():
        assert http.get(f"/{api.name}/{request_id}").json() == body


def test_an_api_whose_queue_finds_no_room_in_the_store_is_refused_at_deploy(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # The mesh's buckets and streams reserve about 2.2 GiB of the 3 GB NATS may store; a queue of 2 GiB does not fit.
    with private_mesh(
        tmp_path_factory.mktemp("no-room"), CORTADO_NATS_MAX_FILE_STORE="5GB", CORTADO_QUEUE_MAX_BYTES=str(2 * 1024**3)
    ) as cramped:
        with pytest.raises(grpc.RpcError) as refused:
            cramped.deploy()
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        message = refused.value.details() or ""
        assert "JetStream has no room left for this API's queue, which reserves 2,147,483,648 bytes" in message
        assert "(CORTADO_QUEUE_MAX_BYTES): give NATS more storage (its max_file_store) or lower that setting" in message
