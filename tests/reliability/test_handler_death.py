"""Nothing lost (README, "Guarantees"): a handler process SIGKILLed mid-request, once or every time (real processes,
real signals).

The queue's ack wait is 20 s here, so a request that comes back well before that was handed back by the executor
when its process died, not by the ack wait running out.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from tests.faults import final
from tests.helpers import eventually
from tests.meshcalls import submit
from tests.reliability.support import Private, private_mesh, status_of

pytestmark = pytest.mark.reliability

ACK_WAIT_SECONDS = 20


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Private]:
    with private_mesh(tmp_path_factory.mktemp("death"), CORTADO_ACK_WAIT_SECONDS=str(ACK_WAIT_SECONDS)) as running:
        yield running


def test_a_handler_process_killed_mid_request_is_redelivered_at_once_and_completes_with_one_result(
    private: Private,
) -> None:
    api = private.deploy()
    http = private.http
    doomed = submit(http, api.name, json={"n": 1, "hold": 60, "first_only": True})
    queued = [submit(http, api.name, json={"n": n}) for n in range(2, 5)]
    (_, pid), *_ = eventually(lambda: api.starts(doomed), what="the first run began")
    # Recorded once the handler has run a moment (inprogress.IN_PROGRESS_AFTER).
    eventually(lambda: status_of(http, api.name, doomed) == "in_progress", what="in_progress recorded")

    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    body = final(http, api.name, doomed, timeout=ACK_WAIT_SECONDS / 2)
    assert time.monotonic() - killed_at < ACK_WAIT_SECONDS / 2  # handed back at once, not after the ack wait
    assert body["status"] == "completed", body
    assert body["result"] == {"n": 1}
    runs = api.starts(doomed)
    assert len(runs) == 2, runs
    assert runs[0][1] == pid and runs[1][1] != pid, runs  # the second run is in the restarted process
    assert api.ends()[doomed] == 1

    # The requests queued behind it were not disturbed: each ran once and completed.
    for n, request_id in enumerate(queued, start=2):
        assert final(http, api.name, request_id)["result"] == {"n": n}
        assert len(api.starts(request_id)) == 1
    # One final record: reading it again still says completed, with the same result.
    assert final(http, api.name, doomed) == body


@pytest.mark.parametrize("max_retries", [None, 1, 0], ids=["default", "one", "zero"])
def test_a_handler_that_kills_its_process_every_time_fails_after_max_retries_saying_so(
    private: Private, max_retries: int | None
) -> None:
    api = private.deploy({"handler": {"max_retries": max_retries}} if max_retries is not None else None)
    retries = 3 if max_retries is None else max_retries
    http = private.http
    request_id = submit(http, api.name, json={"n": 1, "die": True})

    body = final(http, api.name, request_id, timeout=60)
    assert body["status"] == "failed", body
    assert "result" not in body or body["result"] is None, body
    assert body["error"]["type"] == "HandlerProcessDied", body
    message = body["error"]["message"]
    assert f"max_retries={retries}" in message, message
    assert "died" in message, message
    # The first run and max_retries redeliveries, each in a new process: never more.
    runs = api.starts(request_id)
    assert len(runs) == retries + 1, runs
    assert len({pid for _, pid in runs}) == retries + 1, runs

    # The API keeps serving, and the failed request stays failed (never back to in_progress).
    after = submit(http, api.name, json={"n": 2})
    assert final(http, api.name, after)["result"] == {"n": 2}
    assert final(http, api.name, request_id) == body
    assert len(api.starts(request_id)) == retries + 1


def test_requests_queued_behind_one_whose_handler_kills_its_process_are_not_failed_for_it(private: Private) -> None:
    # The busy process prefetches the next requests; its death hands them back unstarted. That is no
    # reason to count them as retries (max_retries counts deaths mid-request): they must run once and complete.
    api = private.deploy({"handler": {"max_retries": 0}})
    http = private.http
    doomed = submit(http, api.name, json={"n": 0, "die": True})
    behind = {submit(http, api.name, json={"n": n}): n for n in (1, 2, 3)}

    assert final(http, api.name, doomed)["status"] == "failed"
    for request_id, n in behind.items():
        body = final(http, api.name, request_id)
        runs = len(api.starts(request_id))
        assert body["status"] == "completed", f"request {n} ran {runs} times and ended {body}"
        assert body["result"] == {"n": n}
        assert runs == 1
