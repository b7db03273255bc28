"""The same calls as gRPC methods (README, "gRPC (same port)"), for gRPC clients, through Envoy."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import grpc
import httpx
import pytest
from google.api import httpbody_pb2

from cortado.client import Client, SchedulerClient
from cortado.mesh import LocalMesh
from cortado.v1 import public_pb2, public_pb2_grpc, records_pb2
from tests.e2e.http_api.support import HANDLER, Api
from tests.helpers import eventually, unique_name, write_project
from tests.meshcalls import result, submit, wait_ready

pytestmark = pytest.mark.e2e

HEX = set("0123456789abcdef")
JSON = "application/json"
S = records_pb2


@pytest.fixture(scope="module")
def api(scheduler: SchedulerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The test handler (one request at a time), deployed once for the module."""
    root = tmp_path_factory.mktemp("grpc-api")
    name = unique_name("grpc")
    releases = root / "releases"
    releases.mkdir()
    deployed = Api(name, root / "calls.log", releases)
    scheduler.deploy(write_project(root, name, HANDLER, {"handler": {"config": {"calls": str(deployed.calls)}}}))
    try:
        wait_ready(scheduler, name)
        yield deployed
    finally:
        deployed.release_all()
        with contextlib.suppress(grpc.RpcError):
            scheduler.delete(name, force=True)


@pytest.fixture
def held(api: Api) -> Iterator[Api]:
    """The module's API, with every request a test held released when the test ends."""
    try:
        yield api
    finally:
        api.release_all()


@pytest.fixture(scope="module")
def channel(mesh: LocalMesh) -> Iterator[grpc.Channel]:
    """A plain gRPC channel to Envoy's public port."""
    with grpc.insecure_channel(mesh.grpc_address) as opened:
        yield opened


@pytest.fixture(scope="module")
def submission(channel: grpc.Channel) -> public_pb2_grpc.SubmissionStub:
    return public_pb2_grpc.SubmissionStub(channel)


@pytest.fixture(scope="module")
def results(channel: grpc.Channel) -> public_pb2_grpc.ResultsStub:
    return public_pb2_grpc.ResultsStub(channel)


def as_json(value: Any) -> bytes:
    return json.dumps(value).encode()


def assert_recent(view: records_pb2.RequestView) -> None:
    assert view.HasField("finished_at"), view
    finished = view.finished_at.ToDatetime(tzinfo=UTC)
    assert abs(datetime.now(UTC) - finished) < timedelta(minutes=1), finished


def final(grpc_client: Client, api: str, request_id: str) -> records_pb2.RequestView:
    """The request's final view, through Watch."""
    view = grpc_client.wait(api, request_id, timeout=60)
    assert view.status in (S.REQUEST_STATUS_COMPLETED, S.REQUEST_STATUS_FAILED), view
    return view


def assert_refused(call: Any, code: grpc.StatusCode, *words: str) -> None:
    """call() raises a gRPC error with code and a details message mentioning each of words."""
    with pytest.raises(grpc.RpcError) as refused:
        call()
    error = refused.value
    assert error.code() == code, (error.code(), error.details())
    details = error.details() or ""
    assert " " in details, details
    for word in words:
        assert word.lower() in details.lower(), (word, details)


def test_submit_answers_a_request_id_of_32_hex_chars(
    grpc_client: Client, submission: public_pb2_grpc.SubmissionStub, api: Api
) -> None:
    first = grpc_client.submit(api.name, as_json({"via": "client"}), JSON)
    body = httpbody_pb2.HttpBody(content_type="text/plain; charset=utf-8", data="caf\u00e9".encode())
    second = submission.Submit(public_pb2.SubmitRequest(api=api.name, body=body), timeout=30).id
    for request_id in (first, second):
        assert len(request_id) == 32 and set(request_id) <= HEX, request_id
    assert first != second
    assert json.loads(final(grpc_client, api.name, first).result_json) == {"echo": {"via": "client"}}
    assert json.loads(final(grpc_client, api.name, second).result_json) == {"text": "caf\u00e9"}


def test_watch_streams_in_queue_then_in_progress_then_completed_and_ends(grpc_client: Client, held: Api) -> None:
    blocker = grpc_client.submit(held.name, as_json(held.hold()), JSON)
    eventually(
        lambda: grpc_client.get(held.name, blocker).status == S.REQUEST_STATUS_IN_PROGRESS,
        what="the blocker in progress",
    )
    blocker_release = held.held[-1]
    # Held too, so that it runs long enough for its in_progress state to be recorded.
    watched = held.hold()
    request_id = grpc_client.submit(held.name, as_json(watched), JSON)
    states: list[records_pb2.RequestView] = []
    for view in grpc_client.watch(held.name, request_id, timeout=60):
        states.append(view)
        if len(states) == 1:
            # The current state comes first; let the queue move once it has.
            blocker_release.touch()
        elif len(states) == 2:
            held.release_all()
    assert [s.status for s in states] == [
        S.REQUEST_STATUS_IN_QUEUE,
        S.REQUEST_STATUS_IN_PROGRESS,
        S.REQUEST_STATUS_COMPLETED,
    ], states
    assert all(s.id == request_id for s in states)
    assert json.loads(states[-1].result_json) == {"echo": watched}
    assert_recent(states[-1])


def test_watch_on_a_finished_request_answers_its_final_state_and_ends(grpc_client: Client, api: Api) -> None:
    request_id = grpc_client.submit(api.name, as_json({"n": 1}), JSON)
    final(grpc_client, api.name, request_id)
    states = list(grpc_client.watch(api.name, request_id, timeout=30))
    assert [s.status for s in states] == [S.REQUEST_STATUS_COMPLETED]


def test_get_answers_a_typed_view_with_status_result_json_and_finished_at(
    grpc_client: Client, results: public_pb2_grpc.ResultsStub, held: Api
) -> None:
    running = grpc_client.submit(held.name, as_json(held.hold()), JSON)
    view = eventually(
        lambda: (v := grpc_client.get(held.name, running)).status == S.REQUEST_STATUS_IN_PROGRESS and v,
        what="in progress",
    )
    assert view.id == running
    assert not view.HasField("finished_at") and not view.result_json and not view.HasField("error")
    held.release_all()

    request_id = grpc_client.submit(held.name, as_json({"do": "exact"}), JSON)
    final(grpc_client, held.name, request_id)
    reply = results.Get(public_pb2.GetRequest(api=held.name, id=request_id), timeout=30)
    assert isinstance(reply, public_pb2.GetResponse)
    view = reply.request
    assert view.id == request_id
    assert view.status == S.REQUEST_STATUS_COMPLETED
    assert isinstance(view.result_json, bytes)
    # The handler's JSON, byte for byte: key order and big integers kept.
    assert view.result_json.startswith(b'{"z":1,"a":[2,3.5],"big":1267650600228229401496703205377,'), view.result_json
    assert json.loads(view.result_json)["neg"] == -(10**40)
    assert not view.HasField("error")
    assert_recent(view)


def test_get_answers_a_failed_request_with_its_error_and_no_result(grpc_client: Client, api: Api) -> None:
    request_id = grpc_client.submit(api.name, as_json({"do": "fail", "message": "no GPU today"}), JSON)
    final(grpc_client, api.name, request_id)
    view = grpc_client.get(api.name, request_id)
    assert view.status == S.REQUEST_STATUS_FAILED
    assert (view.error.type, view.error.message) == ("ValueError", "no GPU today")
    assert view.result_json == b""
    assert_recent(view)


def test_an_unknown_id_reads_request_status_not_found(
    grpc_client: Client, results: public_pb2_grpc.ResultsStub, api: Api
) -> None:
    unknown = uuid.uuid4().hex
    view = grpc_client.get(api.name, unknown)
    assert (view.id, view.status) == (unknown, S.REQUEST_STATUS_NOT_FOUND)
    assert not view.HasField("finished_at") and not view.result_json
    states = list(grpc_client.watch(api.name, unknown, timeout=30))
    assert [(s.id, s.status) for s in states] == [(unknown, S.REQUEST_STATUS_NOT_FOUND)]


def test_get_result_over_grpc_answers_the_same_json_as_http(
    results: public_pb2_grpc.ResultsStub, http: httpx.Client, api: Api
) -> None:
    request_id = submit(http, api.name, json={"shape": "http"})
    over_http = result(http, api.name, request_id)
    body = results.GetResult(public_pb2.GetResultRequest(api=api.name, id=request_id, wait=5), timeout=30)
    assert body.content_type.startswith(JSON)
    assert json.loads(body.data) == over_http


def test_get_result_over_grpc_answers_not_found_json_for_an_unknown_id(
    results: public_pb2_grpc.ResultsStub, api: Api
) -> None:
    unknown = uuid.uuid4().hex
    body = results.GetResult(public_pb2.GetResultRequest(api=api.name, id=unknown), timeout=30)
    answer = json.loads(body.data)
    assert (answer["id"], answer["status"]) == (unknown, "not_found")
    assert answer["message"]


def test_ids_from_grpc_and_http_are_the_same_requests(grpc_client: Client, http: httpx.Client, api: Api) -> None:
    from_grpc = grpc_client.submit(api.name, as_json({"from": "grpc"}), JSON)
    assert result(http, api.name, from_grpc)["result"] == {"echo": {"from": "grpc"}}
    from_http = submit(http, api.name, json={"from": "http"})
    assert json.loads(final(grpc_client, api.name, from_http).result_json) == {"echo": {"from": "http"}}


def test_an_unknown_api_answers_not_found_naming_it(
    grpc_client: Client, results: public_pb2_grpc.ResultsStub, api: Api
) -> None:
    missing = unique_name("missing")
    some_id = uuid.uuid4().hex
    assert_refused(lambda: grpc_client.submit(missing, b"{}", JSON), grpc.StatusCode.NOT_FOUND, missing)
    assert_refused(lambda: grpc_client.get(missing, some_id), grpc.StatusCode.NOT_FOUND, missing)
    assert_refused(lambda: list(grpc_client.watch(missing, some_id, 30)), grpc.StatusCode.NOT_FOUND, missing)
    assert_refused(
        lambda: results.GetResult(public_pb2.GetResultRequest(api=missing, id=some_id), timeout=30),
        grpc.StatusCode.NOT_FOUND,
        missing,
    )


@pytest.mark.parametrize(
    ("content_type", "data", "words"),
    [
        (JSON, b'{"broken": ', ["JSON"]),
        ("text/plain; charset=us-ascii", b"caf\xe9", ["0xe9"]),
        ("text/plain; charset=klingon", b"qapla'", ["klingon"]),
    ],
    ids=["json-that-does-not-parse", "text-not-in-its-charset", "unknown-charset"],
)
def test_bad_input_answers_invalid_argument_and_changes_nothing(
    grpc_client: Client, scheduler: SchedulerClient, api: Api, content_type: str, data: bytes, words: list[str]
) -> None:
    eventually(lambda: scheduler.describe(api.name).queued == 0 and scheduler.describe(api.name).in_flight == 0)
    before = api.called()
    assert_refused(lambda: grpc_client.submit(api.name, data, content_type), grpc.StatusCode.INVALID_ARGUMENT, *words)
    assert scheduler.describe(api.name).queued == 0
    marker = grpc_client.submit(api.name, as_json({"marker": True}), JSON)
    final(grpc_client, api.name, marker)
    assert api.called()[len(before) :] == [marker]


def test_a_large_payload_over_grpc_reaches_the_handler_intact(grpc_client: Client, api: Api) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 5)
    request_id = grpc_client.submit(api.name, payload, "application/octet-stream")
    view = final(grpc_client, api.name, request_id)
    assert json.loads(view.result_json) == {"sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload)}


# --- Submit with wait ------------------------------------------------------------------------------------------------


def test_submit_with_wait_answers_the_final_state_when_it_finishes_within_the_wait(
    grpc_client: Client, results: public_pb2_grpc.ResultsStub, api: Api
) -> None:
    view = grpc_client.submit_and_wait(api.name, as_json({"do": "exact"}), JSON, wait=30)
    assert view.status == S.REQUEST_STATUS_COMPLETED, view
    assert len(view.id) == 32 and set(view.id) <= HEX
    assert view.result_json.startswith(b'{"z":1,"a":[2,3.5],"big":1267650600228229401496703205377,'), view
    assert_recent(view)
    # The same view Get answers, and GetResult's JSON is the same record.
    assert grpc_client.get(api.name, view.id) == view
    failed = grpc_client.submit_and_wait(api.name, as_json({"do": "fail", "message": "nope"}), JSON, wait=30)
    assert failed.status == S.REQUEST_STATUS_FAILED
    assert (failed.error.type, failed.error.message) == ("ValueError", "nope")


def test_submit_with_wait_answers_the_current_state_at_the_end_of_the_wait_and_the_request_goes_on(
    grpc_client: Client, submission: public_pb2_grpc.SubmissionStub, held: Api
) -> None:
    body = httpbody_pb2.HttpBody(content_type=JSON, data=as_json(held.hold()))
    reply = submission.Submit(public_pb2.SubmitRequest(api=held.name, body=body, wait=1), timeout=30)
    assert reply.request.id == reply.id
    assert reply.request.status in (S.REQUEST_STATUS_IN_QUEUE, S.REQUEST_STATUS_IN_PROGRESS), reply
    held.release_all()
    assert final(grpc_client, held.name, reply.id).status == S.REQUEST_STATUS_COMPLETED


def test_submit_without_wait_answers_only_the_id_as_before(
    submission: public_pb2_grpc.SubmissionStub, grpc_client: Client, api: Api
) -> None:
    body = httpbody_pb2.HttpBody(content_type=JSON, data=b"{}")
    reply = submission.Submit(public_pb2.SubmitRequest(api=api.name, body=body), timeout=30)
    assert reply.id and not reply.HasField("request")
    final(grpc_client, api.name, reply.id)


@pytest.mark.parametrize("wait", [-1.0, float("nan"), float("inf")], ids=["negative", "nan", "infinite"])
def test_a_bad_wait_answers_invalid_argument_saying_why(
    submission: public_pb2_grpc.SubmissionStub, api: Api, wait: float
) -> None:
    body = httpbody_pb2.HttpBody(content_type=JSON, data=b"{}")
    assert_refused(
        lambda: submission.Submit(public_pb2.SubmitRequest(api=api.name, body=body, wait=wait), timeout=30),
        grpc.StatusCode.INVALID_ARGUMENT,
        "wait must be a finite number of seconds, 0 or more",
    )


def test_submit_with_wait_and_an_idempotency_key_names_the_same_request(grpc_client: Client, api: Api) -> None:
    key = uuid.uuid4().hex
    first = grpc_client.submit_and_wait(api.name, as_json({"keyed": 1}), JSON, wait=30, idempotency_key=key)
    assert first.status == S.REQUEST_STATUS_COMPLETED
    again = grpc_client.submit_and_wait(api.name, as_json({"keyed": 1}), JSON, wait=30, idempotency_key=key)
    assert again == first
    assert grpc_client.submit(api.name, as_json({"keyed": 1}), JSON, idempotency_key=key) == first.id
    assert api.called().count(first.id) == 1


@pytest.mark.parametrize("bad_id", ["\n", "a.b", "x y", "*", ">", "%0A"])
def test_an_id_that_is_no_request_id_is_not_found_on_every_read_and_never_an_error(
    api: Api, http: httpx.Client, grpc_client: Client, bad_id: str
) -> None:
    for params in ({}, {"wait": "0.1"}):
        answer = http.get(f"/{api.name}/{quote(bad_id, safe='')}", params=params)
        assert answer.status_code == 404 and answer.json()["status"] == "not_found", (params, answer.text)
    assert grpc_client.get(api.name, bad_id).status == records_pb2.REQUEST_STATUS_NOT_FOUND
    assert [v.status for v in grpc_client.watch(api.name, bad_id, timeout=10)] == [records_pb2.REQUEST_STATUS_NOT_FOUND]
    done = submit(http, api.name, json={"n": 1})
    views = {v.id: v.status for v in grpc_client.results(api.name, [bad_id, done], timeout=30)}
    assert views == {bad_id: records_pb2.REQUEST_STATUS_NOT_FOUND, done: records_pb2.REQUEST_STATUS_COMPLETED}
