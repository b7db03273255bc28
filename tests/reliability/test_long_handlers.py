"""Nothing lost (README, "Guarantees"): handlers running far longer than the queue's ack wait (2 s here).

Heartbeats keep a running request (and one prefetched behind it) from being redelivered; a process killed
mid-run has its request redelivered and completed.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from tests.faults import final
from tests.helpers import eventually
from tests.meshcalls import submit
from tests.reliability.support import Private, private_mesh, status_of

pytestmark = pytest.mark.reliability

ACK_WAIT_SECONDS = 2
HANDLER_SECONDS = 8


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Private]:
    with private_mesh(tmp_path_factory.mktemp("long"), CORTADO_ACK_WAIT_SECONDS=str(ACK_WAIT_SECONDS)) as running:
        yield running


def test_a_handler_running_four_times_the_ack_wait_runs_exactly_once_and_so_does_the_request_behind_it(
    private: Private,
) -> None:
    api = private.deploy()
    http = private.http
    long = submit(http, api.name, json={"n": 1, "sleep": HANDLER_SECONDS})
    behind = submit(http, api.name, json={"n": 2})  # prefetched by the busy process, held for the whole run

    body = final(http, api.name, long, timeout=60)
    assert body["status"] == "completed", body
    assert body["result"] == {"n": 1}
    assert final(http, api.name, behind)["result"] == {"n": 2}
    assert len(api.starts(long)) == 1, api.events()
    assert len(api.starts(behind)) == 1, api.events()
    assert api.ends() == {long: 1, behind: 1}
    assert len(api.handler_pids()) == 1  # and no process was restarted meanwhile


def test_a_long_handler_whose_process_is_killed_is_redelivered_and_completes(private: Private) -> None:
    api = private.deploy()
    http = private.http
    request_id = submit(http, api.name, json={"n": 7, "hold": 60, "first_only": True})
    (_, pid), *_ = eventually(lambda: api.starts(request_id), what="the first run began")
    # Recorded once the handler has run a moment (inprogress.IN_PROGRESS_AFTER).
    eventually(lambda: status_of(http, api.name, request_id) == "in_progress", what="in_progress recorded")

    os.kill(pid, signal.SIGKILL)
    body = final(http, api.name, request_id, timeout=60)
    assert body["status"] == "completed", body
    assert body["result"] == {"n": 7}
    runs = api.starts(request_id)
    assert len(runs) == 2, runs
    assert runs[1][1] != pid, runs
    assert api.ends() == {request_id: 1}
