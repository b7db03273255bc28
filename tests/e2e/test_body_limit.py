"""One body limit for HTTP and gRPC: a native gRPC Submit or SubmitStream item over 32 MiB is refused, naming the
limit, through Envoy's public port (where Envoy's own 413 applies only to HTTP bodies)."""

from __future__ import annotations

import grpc
import pytest

from cortado.client import Client
from cortado.runtime.limits import MAX_BODY_BYTES
from services.ingest.config import MAX_SUBMIT_MESSAGE_BYTES
from tests.meshcalls import Deploy

pytestmark = pytest.mark.e2e

HANDLER = """
    class Handler:
        def handle_async(self, payload):
            return {"length": len(payload)}
"""
OVER = b"\0" * (MAX_BODY_BYTES + 1)
REFUSAL = (
    "the request body is 33,554,433 bytes, larger than the 32 MiB limit (33,554,432 bytes); "
    "it is refused whatever the retry"
)


def test_a_grpc_submit_over_the_body_limit_is_refused_naming_the_limit(deploy: Deploy, grpc_client: Client) -> None:
    api = deploy(HANDLER)
    with pytest.raises(grpc.RpcError) as caught:
        grpc_client.submit(api, OVER)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == REFUSAL
    # At the limit it is taken, and the handler gets it whole.
    view = grpc_client.submit_and_wait(api, OVER[:-1], wait=60)
    assert view.result_json == b'{"length":33554432}', view


def test_a_grpc_message_far_over_the_limit_is_refused_before_ingest_reads_it(
    deploy: Deploy, grpc_client: Client
) -> None:
    api = deploy(HANDLER)
    with pytest.raises(grpc.RpcError) as caught:
        grpc_client.submit(api, b"\0" * (MAX_SUBMIT_MESSAGE_BYTES + 1))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"vs. {MAX_SUBMIT_MESSAGE_BYTES})" in str(caught.value.details()), caught.value.details()


def test_each_stream_item_over_the_body_limit_is_refused_and_the_stream_goes_on(
    deploy: Deploy, grpc_client: Client
) -> None:
    api = deploy(HANDLER)
    items = [Client.request(api, data) for data in (b"a", OVER, b"bc", OVER)]
    answers = list(grpc_client.submit_many(items, timeout=120))
    assert [a.status.code for a in answers] == [0, grpc.StatusCode.INVALID_ARGUMENT.value[0]] * 2
    assert [a.status.message for a in answers] == ["", REFUSAL] * 2
    assert answers[0].id and answers[2].id and not answers[1].id and not answers[3].id
    for request_id, length in ((answers[0].id, 1), (answers[2].id, 2)):
        assert grpc_client.wait(api, request_id, timeout=60).result_json == f'{{"length":{length}}}'.encode()
