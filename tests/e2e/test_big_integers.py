"""Integers of any size in a result, past Python's 4300-digit limit, end to end through Envoy and the CLI."""

from __future__ import annotations

import httpx
import pytest

from cortado.cli import main
from cortado.mesh import LocalMesh
from cortado.runtime.encoding import loads_json
from tests.meshcalls import Deploy, submit

pytestmark = pytest.mark.e2e

HUGE = """
class Handler:
    def handle_async(self, payload):
        return {"n": 10**5000, "neg": -(10**4400) - 1, "small": 1}
"""


def test_a_result_holding_a_5000_digit_integer_is_kept_exactly(
    deploy: Deploy, http: httpx.Client, mesh: LocalMesh, capsys: pytest.CaptureFixture[str]
) -> None:
    api = deploy(HUGE)
    request_id = submit(http, api, json={})
    reply = http.get(f"/{api}/{request_id}", params={"wait": 30})
    assert reply.status_code == 200, reply.text[:500]
    body = loads_json(reply.content)
    assert body["status"] == "completed", body
    assert body["result"] == {"n": 10**5000, "neg": -(10**4400) - 1, "small": 1}
    assert b'"n":1' + b"0" * 5000 + b"," in reply.content

    capsys.readouterr()
    code = main(["result", api, request_id, "--scheduler", mesh.scheduler_address, "--endpoint", mesh.grpc_address])
    out = capsys.readouterr().out
    assert code == 0, out[:500]
    assert loads_json(out)["result"]["n"] == 10**5000
