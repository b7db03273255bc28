"""Large outcomes: an error message holding megabytes is cut, not fatal; results read only what callers wait for."""

from __future__ import annotations

import httpx

from cortado.mesh import LocalMesh
from tests.e2e.test_metrics import scrape, value
from tests.helpers import eventually
from tests.meshcalls import Deploy, result, submit

HUGE_ERROR = """
class Handler:
    def handle_async(self, payload):
        raise ValueError("payload was: " + "x" * (8 * 1024 * 1024))
"""

LARGE_RESULT = """
class Handler:
    def handle_async(self, payload):
        return {"blob": "y" * 1_000_000}  # just under the 1 MiB held in the record itself
"""


def test_an_error_message_of_megabytes_is_cut_and_the_request_fails_with_its_own_error(
    deploy: Deploy, http: httpx.Client
) -> None:
    api = deploy(HUGE_ERROR)
    body = result(http, api, submit(http, api, json={}))
    assert body["status"] == "failed"
    assert body["error"]["type"] == "ValueError"  # its own error, not HandlerProcessDied after retries
    message = body["error"]["message"]
    assert message.startswith("payload was: xxxx")
    assert message.endswith(f"... (cut: the message was {len('payload was: ') + 8 * 1024 * 1024} characters)")
    assert len(message) < 70_000


def test_results_receive_no_record_nobody_waits_for(deploy: Deploy, http: httpx.Client, mesh: LocalMesh) -> None:
    api = deploy(LARGE_RESULT)

    def received_bytes() -> float:
        return value(scrape(mesh, "results"), "cortado_nats_client_bytes_total", direction="in") or 0.0

    before = received_bytes()
    ids = [submit(http, api, json={"n": n}) for n in range(20)]
    # Nobody waits: let them finish, watching the executor's count rather than asking results.
    eventually(
        lambda: (
            (value(scrape(mesh, "executor"), "cortado_requests_finished_total", api=api, status="completed") or 0)
            >= len(ids)
        ),
        timeout=60,
        what="20 requests completed",
    )
    # 20 results of 1 MB were written; a results instance that received every write would have read 20 MB.
    assert received_bytes() - before < 2 * 1024 * 1024
    # Reading one answers it in full.
    assert len(result(http, api, ids[0])["result"]["blob"]) == 1_000_000
