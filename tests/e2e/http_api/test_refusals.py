"""The HTTP API's refusals (README, "The HTTP API"): bad input, bodies over the limit, unknown APIs and routes, a
full queue; and what is not refused."""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
import uuid
from typing import Any

import grpc
import httpx
import pytest

from cortado.client import SchedulerClient
from cortado.mesh import LocalMesh
from tests.e2e.http_api.support import MIB, Api, assert_error, get, idle
from tests.helpers import unique_name
from tests.meshcalls import fill_queue, result, submit

pytestmark = pytest.mark.e2e


# --- bad input -------------------------------------------------------------------------------------------------------


BAD_INPUT = [
    pytest.param("application/json", b'{"broken": ', 400, ["JSON"], id="json-that-does-not-parse"),
    pytest.param("application/json", b"", 400, ["empty"], id="empty-json"),
    pytest.param("application/json", b'{"x": NaN}', 400, ["JSON"], id="json-with-nan"),
    pytest.param("text/plain; charset=us-ascii", b"caf\xe9", 400, ["0xe9"], id="text-not-in-its-charset"),
    pytest.param("text/plain", b"caf\xe9", 400, ["utf-8"], id="text-not-utf-8"),
    pytest.param("text/plain; charset=klingon", b"qapla'", 400, ["klingon"], id="unknown-charset"),
    pytest.param("application/octet-stream", b"\0" * (33 * MIB), 413, ["32 MiB"], id="body-over-32-mib"),
]


@pytest.mark.parametrize(("content_type", "body", "code", "words"), BAD_INPUT)
def test_bad_input_is_refused_with_a_clear_error_and_changes_nothing(
    http: httpx.Client,
    scheduler: SchedulerClient,
    api: Api,
    content_type: str,
    body: bytes,
    code: int,
    words: list[str],
) -> None:
    idle(scheduler, api)
    before = api.called()
    assert_error(http.post(f"/{api.name}", content=body, headers={"content-type": content_type}), code, *words)
    status = scheduler.describe(api.name)
    assert (status.queued, status.in_flight) == (0, 0), status
    # A request sent after the refused one is the only one the handler sees.
    marker = submit(http, api.name, json={"marker": True})
    assert result(http, api.name, marker)["status"] == "completed"
    assert api.called()[len(before) :] == [marker]


def _post_with_urllib(url: str, body: bytes, content_type: str) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def _post_with_requests(url: str, body: bytes, content_type: str) -> tuple[int, str, bytes]:
    requests = pytest.importorskip("requests")
    reply = requests.post(url, data=body, headers={"Content-Type": content_type}, timeout=60)
    return int(reply.status_code), str(reply.headers["Content-Type"]), bytes(reply.content)


@pytest.mark.parametrize("post", [_post_with_urllib, _post_with_requests], ids=["urllib", "requests"])
@pytest.mark.parametrize("declared", ["octet-stream", "json"])
def test_a_body_over_the_limit_sent_whole_before_reading_answers_413_json_not_a_reset(
    mesh: LocalMesh, scheduler: SchedulerClient, api: Api, post: Any, declared: str
) -> None:
    # urllib (http.client) sends the whole body before it reads anything: Envoy must read it all before answering.
    idle(scheduler, api)
    before = api.called()
    content_type = "application/json" if declared == "json" else "application/octet-stream"
    status, content_type, raw = post(f"{mesh.http_url}/{api.name}", b"\0" * (40 * MIB), content_type)
    assert (status, content_type) == (413, "application/json"), (status, content_type, raw[:200])
    assert json.loads(raw) == {"code": 413, "message": "the request body is larger than the 32 MiB limit"}
    # And the connection Envoy kept is fine for the next request; nothing was queued.
    status, _, raw = post(f"{mesh.http_url}/{api.name}?wait=30", b"after", "text/plain")
    assert status == 200, raw
    assert api.called()[len(before) :] == [json.loads(raw)["id"]]


def test_post_to_an_unknown_api_answers_404_naming_the_api_and_queues_nothing(
    http: httpx.Client, scheduler: SchedulerClient, api: Api
) -> None:
    missing = unique_name("missing")
    assert_error(http.post(f"/{missing}", json={"x": 1}), 404, missing)
    assert_error(http.post(f"/{missing}", content=b"raw"), 404, missing)
    with pytest.raises(grpc.RpcError) as refused:
        scheduler.describe(missing)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND


def test_get_on_an_unknown_api_answers_404_with_a_message(http: httpx.Client, api: Api) -> None:
    missing = unique_name("missing")
    request_id = submit(http, api.name, json={"x": 1})
    assert_error(get(http, missing, request_id), 404, missing)
    assert_error(get(http, missing, uuid.uuid4().hex, wait=1), 404, missing)


def test_a_full_queue_answers_429_with_retry_after_and_queues_nothing(
    http: httpx.Client, scheduler: SchedulerClient, short_api: Api
) -> None:
    try:
        # One runs, one is fetched ahead, two wait: the queue (max_length 2) is full.
        held = fill_queue(http, scheduler, short_api.name, short_api.hold, 2)
        before = short_api.called()
        refused = http.post(f"/{short_api.name}", json={"n": 3})
        assert_error(refused, 429, "full")
        assert refused.json()["message"] == (
            f"the queue of API {short_api.name!r} is full: 2 requests are waiting, its queue.max_length is 2; "
            "retry after 1s"
        )
        assert int(refused.headers["retry-after"]) >= 1, refused.headers
        assert scheduler.describe(short_api.name).queued == 2
    finally:
        short_api.release_all()
    for request_id in held:
        assert result(http, short_api.name, request_id)["status"] == "completed"
    assert short_api.called()[len(before) :] == held[1:]
    # Room again once the queue drained.
    assert result(http, short_api.name, submit(http, short_api.name, json={"n": 4}))["status"] == "completed"


# --- Envoy's own answers ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/a/b/c"), ("DELETE", "/x"), ("PUT", "/x"), ("GET", "/"), ("GET", "/just-an-api"), ("POST", "/a/b")],
)
def test_a_route_that_does_not_exist_answers_404_json_with_a_message(
    http: httpx.Client, method: str, path: str
) -> None:
    assert_error(http.request(method, path), 404)


def test_an_api_query_parameter_does_not_redirect_a_submission_or_a_read(
    http: httpx.Client, api: Api, short_api: Api
) -> None:
    before_short = short_api.called()
    reply = http.post(f"/{api.name}", params={"api": short_api.name}, json={"to": "main"})
    assert reply.status_code == 200, reply.text
    request_id = reply.json()["id"]
    assert result(http, api.name, request_id)["result"] == {"echo": {"to": "main"}}
    assert request_id in api.called()
    assert short_api.called() == before_short
    assert get(http, short_api.name, request_id).status_code == 404
    # Neither ?api= nor ?id= changes what GET reads.
    read = http.get(f"/{api.name}/{request_id}", params={"api": short_api.name, "id": uuid.uuid4().hex})
    assert read.status_code == 200, read.text
    assert read.json()["id"] == request_id
    # An unknown query parameter is ignored, not an error.
    assert http.post(f"/{api.name}", params={"colour": "blue"}, json={}).status_code == 200


def test_a_large_payload_reaches_the_handler_intact(http: httpx.Client, api: Api) -> None:
    payload = os.urandom(2 * MIB + 17)
    request_id = submit(http, api.name, content=payload, headers={"content-type": "application/octet-stream"})
    body = result(http, api.name, request_id)
    assert body["result"] == {"sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload)}, body
