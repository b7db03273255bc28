"""A handler that writes forged frames on its channel to the executor cannot smuggle a bad result through: a media
type that is no media type (a header injection), an inline result over the inline limit and chunks that do not add
up to what the outcome announces each fail the request with InvalidResult, and the API goes on serving."""

from __future__ import annotations

import httpx
import pytest

from tests.meshcalls import Deploy, result, submit

pytestmark = pytest.mark.integration

FORGER = r'''
import asyncio
import gc
import os
import socket
import sys

from cortado.v1 import handler_pb2


def channel():
    """The socket this process shares with its executor: the one its stream writer writes to."""
    writers = [o for o in gc.get_objects() if isinstance(o, asyncio.StreamWriter)]
    return writers[0].transport.get_extra_info("socket").fileno()


class Handler:
    async def handle_async(self, payload, request_id):
        frame = sys.modules["services.executor.channel"].frame
        attack = payload["attack"]
        outcome = handler_pb2.Outcome(id=request_id, completed=True)
        chunks = []
        if attack == "header":
            outcome.result_content_type = "text/html\r\nSet-Cookie: stolen=1"
            outcome.result_data = b"<p>hi</p>"
        elif attack == "inline":
            outcome.result_json = b'"' + b"x" * (2 * 1024 * 1024) + b'"'
        elif attack == "short":
            chunks = [handler_pb2.ResultChunk(id=request_id, data=b"y" * 1000)]
            outcome.result_content_type = "application/octet-stream"
            outcome.result_streamed_bytes = 5000
        elif attack == "other":
            # Chunks for a request this process does not hold are ignored; its own result is whole.
            chunks = [handler_pb2.ResultChunk(id="0" * 32, data=b"z" * 10)]
            return {"ok": True}
        with socket.socket(fileno=os.dup(channel())) as sock:
            sock.setblocking(True)  # shared with the event loop's socket: all of the frame goes, then back
            try:
                sock.sendall(frame(handler_pb2.FromHandler(chunks=chunks, outcomes=[outcome])))
            finally:
                sock.setblocking(False)
        return {"should": "not be kept"}
'''


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        ("header", "content_type must be a media type such as 'image/png', not 'text/html\\r\\nSet-Cookie: stolen=1'"),
        ("inline", f"a result of {2 * 1024 * 1024 + 2} bytes came inline; at most {1024 * 1024} do"),
        ("short", "the result arrived incomplete from the handler process"),
    ],
)
def test_a_forged_result_fails_its_request_and_the_api_goes_on(
    deploy: Deploy, http: httpx.Client, attack: str, message: str
) -> None:
    api = deploy(FORGER)
    body = result(http, api, submit(http, api, json={"attack": attack}))
    assert (body["status"], body["error"]["type"], body["error"]["message"]) == ("failed", "InvalidResult", message)
    assert result(http, api, submit(http, api, json={"attack": "other"}))["result"] == {"ok": True}
