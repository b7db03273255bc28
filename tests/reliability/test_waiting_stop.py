"""A stopping ingest ends its waits and streams at once, settled: nothing accepted is lost or answered with an error."""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from cortado.client import Client
from cortado.v1 import public_pb2
from tests.faults import final
from tests.helpers import eventually
from tests.meshcalls import submit
from tests.reliability.support import Private, private_mesh

pytestmark = pytest.mark.reliability

GRACE_SECONDS = 8


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Private]:
    with private_mesh(tmp_path_factory.mktemp("waiting-stop"), CORTADO_GRACE_SECONDS=str(GRACE_SECONDS)) as running:
        yield running


def test_sigterm_ends_a_waiting_submit_with_its_state_and_a_stream_after_its_answered_items(private: Private) -> None:
    api = private.deploy()
    blocker = submit(private.http, api.name, json={"n": 0, "hold": 60})
    eventually(lambda: api.starts(blocker), what="the blocker running")

    waited: dict[str, Any] = {}

    def post_waiting() -> None:
        reply = private.http.post(f"/{api.name}", params={"wait": 50}, json={"n": 1})
        waited.update(code=reply.status_code, body=reply.json(), at=time.monotonic())

    poster = threading.Thread(target=post_waiting)
    poster.start()
    outgoing: queue.Queue[public_pb2.SubmitRequest | None] = queue.Queue()
    with Client(private.mesh.grpc_address) as client:
        answers = client.submit_many(iter(outgoing.get, None), timeout=60)
        outgoing.put(Client.request(api.name, b'{"n": 2}', "application/json"))
        streamed = next(answers).id
        assert streamed
        eventually(lambda: (s := private.scheduler.describe(api.name)).queued + s.in_flight == 3, what="3 requests")

        ingest = private.mesh.processes["ingest"]
        stopped_at = time.monotonic()
        ingest.signal(signal.SIGTERM)
        # The stream, idle on the client's side, ends at once: UNAVAILABLE, its answered item settled.
        with pytest.raises(grpc.RpcError) as ended:
            next(answers)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE, ended.value
        assert "the service is stopping" in (ended.value.details() or ""), ended.value.details()
        assert time.monotonic() - stopped_at < GRACE_SECONDS / 2
        outgoing.put(None)
    poster.join(GRACE_SECONDS * 2)
    # The waiting submit answered its state when the stop began, not an error when the grace ran out.
    assert waited["code"] == 200, waited
    assert waited["body"] == {"id": waited["body"]["id"], "status": "in_queue"}, waited
    assert waited["at"] - stopped_at < GRACE_SECONDS / 2, waited
    assert ingest.popen is not None and ingest.popen.wait(GRACE_SECONDS * 3) == 0, ingest.log_tail()

    private.mesh.start_service("ingest")
    api.release(blocker)
    for request_id, n in ((blocker, 0), (waited["body"]["id"], 1), (streamed, 2)):
        assert final(private.http, api.name, request_id)["result"] == {"n": n}
        assert len(api.starts(request_id)) == 1
