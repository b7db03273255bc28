"""A submit whose publish gets no answer keeps its id: it never runs again under an id nobody got.

NATS is paused (SIGSTOP) for longer than ingest's publish timeout while a submit is under way: the work item
sits in the socket, unanswered. Ingest sends it again under the same `Nats-Msg-Id`; once NATS resumes it
stores one copy, and the client's one id is the request that runs, once.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.faults import final
from tests.reliability.support import Private, private_mesh

pytestmark = pytest.mark.reliability

PAUSE_SECONDS = 7  # longer than a JetStream publish's 5 s timeout


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Private]:
    with private_mesh(tmp_path_factory.mktemp("uncertain")) as running:
        yield running


def test_a_publish_without_an_answer_is_sent_again_under_the_same_id_and_runs_once(private: Private) -> None:
    api = private.deploy()
    nats_server = private.mesh.processes["nats"]
    answers: list[Any] = []

    def post() -> None:
        with httpx.Client(base_url=private.mesh.http_url, timeout=120) as client:
            answers.append(client.post(f"/{api.name}", json={"n": 1}))

    nats_server.signal(signal.SIGSTOP)
    try:
        poster = threading.Thread(target=post)
        poster.start()
        time.sleep(PAUSE_SECONDS)
    finally:
        nats_server.signal(signal.SIGCONT)
    poster.join(120)

    assert len(answers) == 1
    reply = answers[0]
    assert reply.status_code == 200, reply.text
    request_id = reply.json()["id"]
    assert final(private.http, api.name, request_id)["result"] == {"n": 1}
    # One request queued, under the id the client got; nothing else ran.
    time.sleep(2)
    assert [i for i, _ in api.starts()] == [request_id], api.events()
