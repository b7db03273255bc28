"""Nothing lost (README, "Guarantees"): a full queue answers 429 and loses nothing accepted; a handler timeout frees
the worker."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from cortado.client import SchedulerClient
from tests.faults import final
from tests.helpers import eventually
from tests.meshcalls import Deploy, submit
from tests.reliability.conftest import DeployRecording
from tests.reliability.support import status_of

pytestmark = pytest.mark.reliability

QUEUE_LENGTH = 5


def held_by_the_replica(scheduler: SchedulerClient, api: str, count: int) -> None:
    """Wait until the API's replica holds `count` requests (running or fetched ahead) and none waits undelivered."""

    def held() -> bool:
        status = scheduler.describe(api)
        return (status.in_flight, status.queued) == (count, 0)

    eventually(held, what=f"{count} requests held by the replica of {api}, none waiting")


def test_queue_max_length_counts_the_requests_waiting_not_those_running_or_fetched_ahead(
    http: httpx.Client, scheduler: SchedulerClient, deploy_recording_api: DeployRecording
) -> None:
    api = deploy_recording_api({"queue": {"max_length": 2}})  # max_concurrency 1: one runs, one is fetched ahead
    running = submit(http, api.name, json={"n": 0, "hold": 60})
    eventually(lambda: api.starts(running), what="the first request running")
    ahead = submit(http, api.name, json={"n": 1, "hold": 60})
    held_by_the_replica(scheduler, api.name, 2)

    # Two more wait in the queue: max_length is reached only now.
    waiting = [submit(http, api.name, json={"n": n}) for n in (2, 3)]
    assert scheduler.describe(api.name).queued == 2
    refused = http.post(f"/{api.name}", json={"n": 4})
    assert refused.status_code == 429, refused.text
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["message"] == (
        f"the queue of API {api.name!r} is full: 2 requests are waiting, its queue.max_length is 2; retry after 1s"
    )
    assert scheduler.describe(api.name).queued == 2

    # The running one finishes: the one ahead runs, a waiting one is fetched ahead, and a place is free again.
    api.release(running)
    eventually(lambda: scheduler.describe(api.name).queued == 1, what="one request left waiting")
    again = submit(http, api.name, json={"n": 4})
    assert http.post(f"/{api.name}", json={"n": 5}).status_code == 429

    api.release(ahead)
    for n, request_id in enumerate([running, ahead, *waiting, again]):
        assert final(http, api.name, request_id)["result"] == {"n": n}


def test_a_full_queue_answers_429_with_retry_after_and_nothing_accepted_is_lost_once_it_drains(
    http: httpx.Client, scheduler: SchedulerClient, deploy_recording_api: DeployRecording
) -> None:
    api = deploy_recording_api({"queue": {"max_length": QUEUE_LENGTH}})
    blocker = submit(http, api.name, json={"n": 0, "hold": 60})
    eventually(lambda: api.starts(blocker), what="the first request running")
    # The one replica holds the next request too (fetched ahead): neither counts against queue.max_length.
    accepted = {blocker: 0, submit(http, api.name, json={"n": 1}): 1}
    held_by_the_replica(scheduler, api.name, 2)
    refused: list[int] = []
    for n in range(2, 3 * QUEUE_LENGTH):
        reply = http.post(f"/{api.name}", json={"n": n})
        if reply.status_code == 200:
            accepted[reply.json()["id"]] = n
            continue
        assert reply.status_code == 429, (reply.status_code, reply.text)
        assert reply.headers["content-type"].startswith("application/json"), reply.headers
        retry_after = reply.headers.get("retry-after")
        assert retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1, reply.headers
        body = reply.json()
        assert isinstance(body, dict) and isinstance(body.get("message"), str), body
        assert "full" in body["message"], body
        refused.append(n)
    # The queue holds QUEUE_LENGTH requests waiting, besides the running one and the one fetched ahead.
    assert len(accepted) == QUEUE_LENGTH + 2, accepted
    assert refused == list(range(QUEUE_LENGTH + 2, 3 * QUEUE_LENGTH)), refused
    assert all(status_of(http, api.name, request_id) in ("in_queue", "in_progress") for request_id in accepted)

    # The queue drains; the refused requests are retried (after Retry-After) and accepted in turn.
    api.release(blocker)

    def retry(n: int) -> Callable[[], str | None]:
        def attempt() -> str | None:
            reply = http.post(f"/{api.name}", json={"n": n})
            assert reply.status_code in (200, 429), (reply.status_code, reply.text)
            return str(reply.json()["id"]) if reply.status_code == 200 else None

        return attempt

    for n in refused:
        accepted[eventually(retry(n), timeout=60, interval=1.0, what=f"request {n} accepted")] = n

    for request_id, n in accepted.items():
        body = final(http, api.name, request_id)
        assert body["status"] == "completed", body
        assert body["result"] == {"n": n}
    # Each accepted request ran exactly once, and nothing refused ever ran.
    assert sorted(request_id for request_id, _ in api.starts()) == sorted(accepted)


TIMEOUT_HANDLERS = {
    "def": """
        import time
        from pathlib import Path


        class Handler:
            def __init__(self, config):
                self.runs = Path(config["runs"])

            def handle_async(self, payload, request_id):
                with self.runs.open("a") as runs:
                    runs.write(f"start {request_id}\\n")
                time.sleep(payload.get("sleep", 0))
                with self.runs.open("a") as runs:
                    runs.write(f"end {request_id}\\n")
                return {"n": payload["n"]}
    """,
    "async def": """
        import asyncio
        from pathlib import Path


        class Handler:
            def __init__(self, config):
                self.runs = Path(config["runs"])

            async def handle_async(self, payload, request_id):
                with self.runs.open("a") as runs:
                    runs.write(f"start {request_id}\\n")
                await asyncio.sleep(payload.get("sleep", 0))
                with self.runs.open("a") as runs:
                    runs.write(f"end {request_id}\\n")
                return {"n": payload["n"]}
    """,
}

SLEEP_SECONDS = 30
"""How long the slow request would run without the API's timeout of 1 s."""


@pytest.mark.parametrize("kind", TIMEOUT_HANDLERS)
def test_a_request_past_the_timeout_fails_saying_timed_out_and_the_next_is_served_at_once(
    http: httpx.Client, deploy: Deploy, tmp_path: Path, kind: str
) -> None:
    runs = tmp_path / "runs.log"
    api = deploy(
        TIMEOUT_HANDLERS[kind], api={"handler": {"timeout": "1s", "max_concurrency": 1, "config": {"runs": str(runs)}}}
    )
    began = time.monotonic()
    slow = submit(http, api, json={"n": 1, "sleep": SLEEP_SECONDS})
    after = submit(http, api, json={"n": 2})

    body = final(http, api, slow)
    assert body["status"] == "failed", body
    assert body["error"]["message"].startswith("timed out"), body
    assert body["error"]["type"] == "TimedOut", body
    # The one worker slot was freed: the request queued behind it did not wait for the slow one.
    assert final(http, api, after)["result"] == {"n": 2}
    assert time.monotonic() - began < SLEEP_SECONDS / 2
    assert final(http, api, submit(http, api, json={"n": 3}))["result"] == {"n": 3}
    lines = runs.read_text().split("\n")
    assert f"end {slow}" not in lines
    assert lines.count(f"start {slow}") == 1  # a timeout is not a reason to run it again
    assert lines.count(f"start {after}") == 1
    # And it stays failed.
    assert final(http, api, slow) == body
