"""Bulk over one stream: Submission/SubmitStream and Results/WatchMany, through Envoy's public port."""

from __future__ import annotations

import contextlib
import json
import queue
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest

from cortado.client import Client, SchedulerClient
from cortado.mesh import LocalMesh
from cortado.v1 import public_pb2, public_pb2_grpc, records_pb2
from tests.e2e.http_api.support import HANDLER, Api
from tests.helpers import unique_name, write_project
from tests.meshcalls import fill_queue, result, submit, wait_ready

pytestmark = pytest.mark.e2e

JSON = "application/json"
S = records_pb2
OK = grpc.StatusCode.OK.value[0]
ITEMS = 300


def deploy_api(scheduler: SchedulerClient, root: Any, prefix: str, api: dict[str, Any]) -> Api:
    name = unique_name(prefix)
    releases = root / "releases"
    releases.mkdir()
    deployed = Api(name, root / "calls.log", releases)
    config = {**api, "handler": {**api.get("handler", {}), "config": {"calls": str(deployed.calls)}}}
    scheduler.deploy(write_project(root, name, HANDLER, config))
    wait_ready(scheduler, name)
    return deployed


@pytest.fixture(scope="module")
def apis(scheduler: SchedulerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Api, Api]]:
    """The test handler twice: a busy API (4 requests at a time) and one whose queue holds a single request."""
    busy = deploy_api(scheduler, tmp_path_factory.mktemp("busy"), "bulk", {"handler": {"max_concurrency": 4}})
    tight = deploy_api(scheduler, tmp_path_factory.mktemp("tight"), "tight", {"queue": {"max_length": 1}})
    try:
        yield busy, tight
    finally:
        for deployed in (busy, tight):
            deployed.release_all()
            with contextlib.suppress(grpc.RpcError):
                scheduler.delete(deployed.name, force=True)


@pytest.fixture(scope="module")
def channel(mesh: LocalMesh) -> Iterator[grpc.Channel]:
    """A plain gRPC channel to Envoy's public port (not to ingest or results directly)."""
    with grpc.insecure_channel(mesh.grpc_address) as opened:
        yield opened


def item(api: str, payload: Any, key: str = "", content_type: str = JSON) -> public_pb2.SubmitRequest:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return Client.request(api, data, content_type, idempotency_key=key)


def test_a_stream_of_hundreds_answers_each_item_in_order_and_refusals_keep_it_open(
    grpc_client: Client, http: httpx.Client, scheduler: SchedulerClient, apis: tuple[Api, Api]
) -> None:
    busy, tight = apis
    before = (len(busy.called()), len(tight.called()))
    # The tight API's one place in the queue is taken (behind one request running and one fetched ahead, all held
    # by its handler): its next submit finds the queue full.
    held = fill_queue(http, scheduler, tight.name, tight.hold, 1)
    missing = unique_name("missing")
    refusals = {
        40: (item(missing, {"lost": True}), grpc.StatusCode.NOT_FOUND, f"API {missing!r} is not deployed"),
        90: (item(busy.name, b'{"broken": '), grpc.StatusCode.INVALID_ARGUMENT, "body is not valid JSON"),
        150: (item(tight.name, {"n": "full"}), grpc.StatusCode.RESOURCE_EXHAUSTED, f"the queue of API {tight.name!r}"),
        200: (item(busy.name, b"caf\xe9", content_type="text/plain"), grpc.StatusCode.INVALID_ARGUMENT, "utf-8"),
    }
    waiting = item(busy.name, {"wait": True})
    waiting.wait = 5
    refusals[250] = (waiting, grpc.StatusCode.INVALID_ARGUMENT, "wait is not supported on SubmitStream")
    requests = [item(busy.name, {"i": i}) for i in range(ITEMS)]
    for position in sorted(refusals):
        requests.insert(position, refusals[position][0])

    try:
        answers = list(grpc_client.submit_many(requests, timeout=120))
    finally:
        tight.release_all()

    assert len(answers) == len(requests)
    accepted: dict[str, int] = {}
    for position, answer in enumerate(answers):
        if position in refusals:
            _, code, words = refusals[position]
            assert not answer.id, (position, answer)
            assert answer.status.code == code.value[0], (position, answer)
            assert words in answer.status.message, (position, answer)
            continue
        assert answer.status.code == OK and not answer.status.message, (position, answer)
        assert len(answer.id) == 32, answer
        # In order: the n-th accepted answer names the n-th payload.
        accepted[answer.id] = len(accepted)
    assert len(accepted) == ITEMS

    # Every accepted request ends with its own result, each final record arriving once.
    finished = list(grpc_client.results(busy.name, list(accepted), timeout=120))
    assert sorted(v.id for v in finished) == sorted(accepted)
    for view in finished:
        assert view.status == S.REQUEST_STATUS_COMPLETED, view
        assert json.loads(view.result_json) == {"echo": {"i": accepted[view.id]}}
    # Nothing refused was queued: the handlers saw exactly the accepted ids, and the tight API only its blocker.
    assert sorted(busy.called()[before[0] :]) == sorted(accepted)
    for request_id in held:
        assert result(http, tight.name, request_id)["status"] == "completed"
    assert tight.called()[before[1] :] == held


def test_each_item_carries_its_own_idempotency_key(grpc_client: Client, apis: tuple[Api, Api]) -> None:
    busy, _ = apis
    keys = [uuid.uuid4().hex for _ in range(20)]
    first = [a.id for a in grpc_client.submit_many(item(busy.name, {"k": k}, key=k) for k in keys)]
    assert all(first) and len(set(first)) == len(keys)
    # Sent again (even with other bodies), the same keys name the same requests, which run once.
    again = [a.id for a in grpc_client.submit_many(item(busy.name, {"other": True}, key=k) for k in keys)]
    assert again == first
    views = list(grpc_client.results(busy.name, first, timeout=60))
    assert {json.loads(v.result_json)["echo"]["k"] for v in views} == set(keys)
    assert sum(busy.called().count(request_id) for request_id in first) == len(keys)


def test_watch_many_follows_everything_submitted_on_a_stream_as_the_ids_come_back(
    grpc_client: Client, apis: tuple[Api, Api]
) -> None:
    busy, _ = apis
    submitted: list[str] = []

    def ids() -> Iterator[str]:
        for answer in grpc_client.submit_many(item(busy.name, {"piped": i}) for i in range(100)):
            submitted.append(answer.id)
            yield answer.id

    views = list(grpc_client.results(busy.name, ids(), timeout=120))
    assert len(submitted) == 100
    assert sorted(v.id for v in views) == sorted(submitted)
    assert all(v.status == S.REQUEST_STATUS_COMPLETED for v in views)


def test_watch_many_answers_each_request_as_it_finishes(
    grpc_client: Client, http: httpx.Client, channel: grpc.Channel, apis: tuple[Api, Api]
) -> None:
    busy, _ = apis
    slow = submit(http, busy.name, json=busy.hold())
    quick = submit(http, busy.name, json={"quick": True})
    results = public_pb2_grpc.ResultsStub(channel)
    # The client's side stays open while answers come: ids can still be added.
    outgoing: queue.Queue[public_pb2.WatchManyRequest | None] = queue.Queue()
    outgoing.put(public_pb2.WatchManyRequest(api=busy.name, ids=[slow, quick]))
    replies = results.WatchMany(iter(outgoing.get, None), timeout=60)
    try:
        first = next(replies)
        assert (first.api, first.request.id, first.request.status) == (busy.name, quick, S.REQUEST_STATUS_COMPLETED)
        later = submit(http, busy.name, json={"later": True})
        outgoing.put(public_pb2.WatchManyRequest(api=busy.name, ids=[later, quick]))
        second = next(replies)
        assert (second.request.id, second.request.status) == (later, S.REQUEST_STATUS_COMPLETED)
        busy.release_all()
        third = next(replies)
        assert (third.request.id, third.request.status) == (slow, S.REQUEST_STATUS_COMPLETED)
        outgoing.put(None)
        assert list(replies) == []
    finally:
        busy.release_all()
        outgoing.put(None)


def test_watch_many_answers_unknown_ids_and_apis_and_goes_on(
    grpc_client: Client, http: httpx.Client, channel: grpc.Channel, apis: tuple[Api, Api]
) -> None:
    busy, _ = apis
    known = submit(http, busy.name, json={"known": True})
    unknown = uuid.uuid4().hex
    missing = unique_name("missing")
    requests = [
        public_pb2.WatchManyRequest(api=missing, ids=[unknown]),
        public_pb2.WatchManyRequest(api=busy.name, ids=[unknown, known, known, "not-an-id"]),
    ]
    replies = list(public_pb2_grpc.ResultsStub(channel).WatchMany(iter(requests), timeout=60))
    by_api: dict[str, list[public_pb2.WatchManyResponse]] = {}
    for reply in replies:
        by_api.setdefault(reply.api, []).append(reply)
    [refused] = by_api[missing]
    assert refused.error.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert refused.error.message == f"API {missing!r} is not deployed"
    assert (refused.request.id, refused.request.status) == (unknown, S.REQUEST_STATUS_NOT_FOUND)
    # An id is answered once on a stream: the unknown one was already answered under the missing API.
    answered = {r.request.id: r.request.status for r in by_api[busy.name]}
    assert answered == {known: S.REQUEST_STATUS_COMPLETED, "not-an-id": S.REQUEST_STATUS_NOT_FOUND}
    assert not any(r.HasField("error") for r in by_api[busy.name])
    with pytest.raises(LookupError, match="is not deployed"):
        list(grpc_client.results(missing, [unknown], timeout=30))
