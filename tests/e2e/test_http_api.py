"""The HTTP API (README, "The HTTP API"), line by line: real Envoy in front of the real services, over HTTP."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from cortado.client import SchedulerClient
from cortado.mesh import LocalMesh
from tests.helpers import eventually, unique_name, write_project
from tests.meshcalls import fill_queue, result, submit, wait_ready

pytestmark = pytest.mark.e2e

# Echoes, holds, fails or hashes as the payload asks, and appends each call's request id to a file.
HANDLER = """
    import hashlib
    import time
    from pathlib import Path


    class Handler:
        def __init__(self, config):
            self.calls = Path(config["calls"])

        def handle_async(self, payload, request_id):
            with self.calls.open("a") as log:
                log.write(request_id + "\\n")
            if isinstance(payload, bytes):
                return {"sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload)}
            if isinstance(payload, str):
                return {"text": payload}
            if not isinstance(payload, dict):
                return {"echo": payload}
            action = payload.get("do")
            if action == "fail":
                raise ValueError(payload.get("message", "asked to fail"))
            if action == "nan":
                return {"ok": 1, "x": float("nan")}
            if action == "exact":
                return {"z": 1, "a": [2, 3.5], "big": 2**100 + 1, "neg": -(10**40), "m": {"y": None, "b": True}}
            if action == "hold":
                release = Path(payload["release"])
                deadline = time.monotonic() + payload.get("seconds", 60)
                while not release.exists() and time.monotonic() < deadline:
                    time.sleep(0.02)
            return {"echo": payload}
"""

HEX = set("0123456789abcdef")
MIB = 1024 * 1024


@dataclass
class Api:
    """A deployed test API: its name, the file its handler logs call ids to, and where release files go."""

    name: str
    calls: Path
    releases: Path
    held: list[Path] = field(default_factory=list)

    def called(self) -> list[str]:
        """The request ids the handler was called with, in order."""
        return self.calls.read_text().split() if self.calls.exists() else []

    def hold(self, seconds: float = 60) -> dict[str, Any]:
        """A payload whose request holds its handler until release_all() (or `seconds` pass)."""
        release = self.releases / uuid.uuid4().hex
        self.held.append(release)
        return {"do": "hold", "release": str(release), "seconds": seconds}

    def release_all(self) -> None:
        """Let every held request finish."""
        for release in self.held:
            release.touch()
        self.held.clear()


@pytest.fixture(scope="module")
def deploy_module(scheduler: SchedulerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """deploy(api={...}) -> Api: the test handler deployed once for the whole module, deleted at its end."""
    created: list[Api] = []

    def _deploy(api: dict[str, Any] | None = None) -> Api:
        root = tmp_path_factory.mktemp("http-api")
        name = unique_name("http")
        releases = root / "releases"
        releases.mkdir()
        deployed = Api(name, root / "calls.log", releases)
        config = {"handler": {"config": {"calls": str(deployed.calls)}}, **(api or {})}
        scheduler.deploy(write_project(root, name, HANDLER, config))
        created.append(deployed)
        wait_ready(scheduler, name)
        return deployed

    yield _deploy
    for deployed in created:
        deployed.release_all()
        with contextlib.suppress(grpc.RpcError):
            scheduler.delete(deployed.name, force=True)


@pytest.fixture(scope="module")
def api(deploy_module: Any) -> Api:
    """The module's main API (one request at a time, results kept 7 days)."""
    deployed: Api = deploy_module()
    return deployed


@pytest.fixture(scope="module")
def short_api(deploy_module: Any) -> Api:
    """A second API whose results expire after 2 s and whose queue holds 2 waiting requests."""
    deployed: Api = deploy_module({"results": {"retention": "2s"}, "queue": {"max_length": 2}})
    return deployed


@pytest.fixture
def held(api: Api) -> Iterator[Api]:
    """The main API, with every request a test held released when the test ends."""
    try:
        yield api
    finally:
        api.release_all()


def get(http: httpx.Client, api: str, request_id: str, **params: Any) -> httpx.Response:
    return http.get(f"/{api}/{request_id}", params=params)


def status_becomes(http: httpx.Client, api: str, request_id: str, status: str) -> dict[str, Any]:
    """Poll GET until the request reads `status`; its body."""

    def check() -> dict[str, Any] | None:
        reply = get(http, api, request_id)
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        return body if body["status"] == status else None

    return eventually(check, timeout=30, what=f"request {request_id} {status}")


def assert_error(reply: httpx.Response, code: int, *words: str) -> dict[str, Any]:
    """The answer is `code` with a JSON object whose human-readable message mentions each of words."""
    assert reply.status_code == code, (reply.status_code, reply.text)
    assert reply.headers["content-type"].startswith("application/json"), reply.headers
    body = reply.json()
    assert isinstance(body, dict), body
    message = body.get("message")
    assert isinstance(message, str), body
    assert len(message) > 10 and " " in message, body
    for word in words:
        assert word.lower() in message.lower(), (word, body)
    return body


def assert_recent_rfc3339_utc(timestamp: str) -> None:
    assert timestamp.endswith("Z"), timestamp
    moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    assert moment.tzinfo is not None
    assert moment.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - moment) < timedelta(minutes=1), timestamp


def idle(scheduler: SchedulerClient, api: Api) -> None:
    """Wait until nothing is queued or in flight for the API."""

    def check() -> bool:
        status = scheduler.describe(api.name)
        return status.queued == 0 and status.in_flight == 0

    eventually(check, timeout=30, what=f"{api.name} idle")


# --- POST /<api> -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/json", b'{"x": [1, 2]}', {"echo": {"x": [1, 2]}}),
        ("application/json; charset=utf-8", b'["a list", 1]', {"echo": ["a list", 1]}),
        ("text/plain", "caf\u00e9".encode(), {"text": "caf\u00e9"}),
        ("text/plain; charset=latin-1", b"caf\xe9", {"text": "caf\u00e9"}),
        (
            "application/octet-stream",
            b"\x00\xff\x10",
            {"sha256": hashlib.sha256(b"\x00\xff\x10").hexdigest(), "size": 3},
        ),
        ("image/png", b"", {"sha256": hashlib.sha256(b"").hexdigest(), "size": 0}),
        (None, b"no content type", {"sha256": hashlib.sha256(b"no content type").hexdigest(), "size": 15}),
    ],
    ids=["json", "json-list-with-charset", "text", "latin-1-text", "bytes", "empty-image", "no-content-type"],
)
def test_post_with_any_body_answers_200_with_only_an_id_and_the_handler_gets_the_body(
    http: httpx.Client, api: Api, content_type: str | None, body: bytes, expected: dict[str, Any]
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    reply = http.post(f"/{api.name}", content=body, headers=headers)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    answer = reply.json()
    assert list(answer) == ["id"], answer
    assert result(http, api.name, answer["id"])["result"] == expected


def test_request_ids_are_32_hex_chars_unique_and_carry_at_least_122_random_bits(http: httpx.Client, api: Api) -> None:
    ids = [submit(http, api.name, content=b"x") for _ in range(50)]
    assert all(len(i) == 32 and set(i) <= HEX for i in ids), ids
    assert len(set(ids)) == len(ids)
    # Every bit position that is random differs somewhere among 50 ids (each stays fixed with chance 2**-49).
    values = [int(i, 16) for i in ids]
    varying = 0
    for other in values[1:]:
        varying |= values[0] ^ other
    assert bin(varying).count("1") >= 122, f"only {bin(varying).count('1')} of 128 bits vary"


# --- GET /<api>/<id> -------------------------------------------------------------------------------------------------


def test_a_request_reads_in_progress_while_handled_and_the_next_one_in_queue_behind_it(
    http: httpx.Client, held: Api
) -> None:
    first = submit(http, held.name, json=held.hold())
    running = status_becomes(http, held.name, first, "in_progress")
    assert running == {"id": first, "status": "in_progress"}
    second = submit(http, held.name, json={"after": first})
    reply = get(http, held.name, second)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"id": second, "status": "in_queue"}
    # Still queued a moment later: one request at a time.
    assert get(http, held.name, second, wait=0.5).json()["status"] == "in_queue"
    held.release_all()
    assert result(http, held.name, first)["status"] == "completed"
    assert result(http, held.name, second)["result"] == {"echo": {"after": first}}


def test_a_completed_request_reads_its_result_and_an_rfc3339_utc_timestamp(http: httpx.Client, api: Api) -> None:
    request_id = submit(http, api.name, json={"hello": "world"})
    body = result(http, api.name, request_id)
    assert set(body) == {"id", "status", "result", "timestamp"}, body
    assert body["id"] == request_id
    assert body["status"] == "completed"
    assert body["result"] == {"echo": {"hello": "world"}}
    assert_recent_rfc3339_utc(body["timestamp"])


def test_a_completed_result_is_exactly_the_handlers_json_with_key_order_and_big_integers_kept(
    http: httpx.Client, api: Api
) -> None:
    request_id = submit(http, api.name, json={"do": "exact"})
    result(http, api.name, request_id)
    raw = get(http, api.name, request_id).text
    expected = json.dumps(
        {"z": 1, "a": [2, 3.5], "big": 2**100 + 1, "neg": -(10**40), "m": {"y": None, "b": True}},
        separators=(",", ":"),
    )
    assert f'"result":{expected}' in raw.replace(" ", ""), raw
    assert json.loads(raw)["result"]["big"] == 2**100 + 1


def test_a_result_with_nan_fails_the_request_with_a_clear_error(http: httpx.Client, api: Api) -> None:
    request_id = submit(http, api.name, json={"do": "nan"})
    body = result(http, api.name, request_id)
    assert body["status"] == "failed", body
    assert "result" not in body
    assert "NaN" in body["error"]["message"], body


def test_a_failed_request_reads_its_error_type_and_message_and_no_result(http: httpx.Client, api: Api) -> None:
    request_id = submit(http, api.name, json={"do": "fail", "message": "the model is on fire"})
    body = result(http, api.name, request_id)
    assert set(body) == {"id", "status", "timestamp", "error"}, body
    assert body["status"] == "failed"
    assert body["error"] == {"type": "ValueError", "message": "the model is on fire"}
    assert_recent_rfc3339_utc(body["timestamp"])
    # The API keeps serving after a failure.
    assert result(http, api.name, submit(http, api.name, json={"n": 1}))["status"] == "completed"


def test_an_unknown_id_answers_404_not_found_with_a_message(http: httpx.Client, api: Api) -> None:
    unknown = uuid.uuid4().hex
    for reply in (get(http, api.name, unknown), get(http, api.name, unknown, wait=0.2)):
        body = assert_error(reply, 404, unknown)
        assert body["status"] == "not_found"
        assert body["id"] == unknown
        assert "result" not in body and "error" not in body
    assert_error(get(http, api.name, "not-even-hex"), 404)


def test_an_id_of_another_api_answers_404_not_found(http: httpx.Client, api: Api, short_api: Api) -> None:
    request_id = submit(http, short_api.name, json={"where": "short"})
    assert result(http, short_api.name, request_id)["status"] == "completed"
    body = assert_error(get(http, api.name, request_id), 404, "not found")
    assert body["status"] == "not_found"
    assert "result" not in body


def test_wait_returns_as_soon_as_the_request_finishes(http: httpx.Client, held: Api) -> None:
    request_id = submit(http, held.name, json={"do": "hold", "release": "/nonexistent/never", "seconds": 1})
    started = time.monotonic()
    reply = get(http, held.name, request_id, wait=20)
    elapsed = time.monotonic() - started
    assert reply.status_code == 200, reply.text
    assert reply.json()["status"] == "completed", reply.text
    assert elapsed < 10, f"wait=20 took {elapsed:.1f}s for a 1 s request"


def test_wait_on_an_unfinished_request_ends_after_the_wait_with_the_current_status(
    http: httpx.Client, held: Api
) -> None:
    request_id = submit(http, held.name, json=held.hold())
    started = time.monotonic()
    reply = get(http, held.name, request_id, wait=1)
    elapsed = time.monotonic() - started
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"id": request_id, "status": reply.json()["status"]}
    assert reply.json()["status"] in ("in_queue", "in_progress"), reply.text
    assert 0.9 <= elapsed < 10, f"wait=1 returned after {elapsed:.2f}s"


def test_results_stay_queryable_after_completion_and_expire_after_the_configured_retention(
    http: httpx.Client, api: Api, short_api: Api
) -> None:
    kept = submit(http, api.name, json={"keep": "7 days"})
    assert result(http, api.name, kept)["status"] == "completed"
    request_id = submit(http, short_api.name, json={"keep": "briefly"})
    body = result(http, short_api.name, request_id)
    assert body["status"] == "completed"
    again = get(http, short_api.name, request_id)
    assert again.status_code == 200, again.text
    assert again.json() == body

    def expired() -> dict[str, Any] | None:
        reply = get(http, short_api.name, request_id)
        return reply.json() if reply.status_code == 404 else None

    gone = eventually(expired, timeout=15, interval=0.2, what=f"request {request_id} expired")
    assert gone["status"] == "not_found"
    assert isinstance(gone["message"], str) and gone["message"]
    # The API with the default retention (7 days) still answers for a result finished before that one.
    still = get(http, api.name, kept)
    assert still.status_code == 200, still.text
    assert still.json()["status"] == "completed"


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


# --- POST /<api>?wait=<s> and Prefer: wait=<s> -----------------------------------------------------------------------


def post_waiting(http: httpx.Client, api: str, wait: object = 30, **request: Any) -> httpx.Response:
    return http.post(f"/{api}", params={"wait": wait}, **request)


def test_post_with_wait_answers_the_final_record_exactly_as_get_does(http: httpx.Client, api: Api) -> None:
    started = time.monotonic()
    reply = post_waiting(http, api.name, json={"do": "exact"})
    assert time.monotonic() - started < 20
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert body["status"] == "completed", body
    assert body["result"]["big"] == 2**100 + 1
    later = get(http, api.name, body["id"])
    # The same bytes and the same status as GET, big integers and key order included.
    assert (later.status_code, later.content) == (reply.status_code, reply.content)
    assert body["id"] in api.called()


def test_post_with_wait_answers_a_failed_request_exactly_as_get_does(http: httpx.Client, api: Api) -> None:
    reply = post_waiting(http, api.name, json={"do": "fail", "message": "no such model"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert set(body) == {"id", "status", "timestamp", "error"}, body
    assert body["error"] == {"type": "ValueError", "message": "no such model"}
    assert get(http, api.name, body["id"]).content == reply.content


def test_post_with_wait_from_urllib_answers_the_final_record(mesh: LocalMesh, http: httpx.Client, api: Api) -> None:
    request = urllib.request.Request(
        f"{mesh.http_url}/{api.name}?wait=30",
        data=b"plain words",
        headers={"Content-Type": "text/plain"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as reply:
        status, content_type, raw = reply.status, reply.headers["Content-Type"], reply.read()
    assert status == 200 and content_type.startswith("application/json"), (status, content_type)
    body = json.loads(raw)
    assert body["status"] == "completed" and body["result"] == {"text": "plain words"}, body
    assert get(http, api.name, body["id"]).content == raw


@pytest.mark.parametrize("prefer", ["wait=30", "respond-async, wait=30", "WAIT = 30", 'wait="30"'])
def test_the_prefer_wait_header_waits_like_the_query_parameter(http: httpx.Client, api: Api, prefer: str) -> None:
    reply = http.post(f"/{api.name}", json={"prefer": prefer}, headers={"Prefer": prefer})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["status"] == "completed" and body["result"] == {"echo": {"prefer": prefer}}, body
    assert get(http, api.name, body["id"]).content == reply.content


def test_a_prefer_header_without_a_wait_answers_only_the_id(http: httpx.Client, api: Api) -> None:
    reply = http.post(f"/{api.name}", json={"n": 1}, headers={"Prefer": "respond-async"})
    assert reply.status_code == 200, reply.text
    assert list(reply.json()) == ["id"], reply.text


def test_a_request_still_running_at_the_end_of_the_wait_answers_id_and_status_and_goes_on(
    http: httpx.Client, held: Api
) -> None:
    started = time.monotonic()
    reply = post_waiting(http, held.name, wait=1, json=held.hold())
    elapsed = time.monotonic() - started
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert list(body) == ["id", "status"], body
    assert body["status"] in ("in_queue", "in_progress"), body
    assert 0.9 <= elapsed < 10, f"wait=1 answered after {elapsed:.2f}s"
    # The Prefer header's wait ends the same way.
    queued = http.post(f"/{held.name}", json={"behind": body["id"]}, headers={"Prefer": "wait=0.5"})
    assert queued.status_code == 200, queued.text
    assert queued.json() == {"id": queued.json()["id"], "status": "in_queue"}
    held.release_all()
    # The request went on: GET gives its result later.
    assert result(http, held.name, body["id"])["status"] == "completed"
    assert result(http, held.name, queued.json()["id"])["result"] == {"echo": {"behind": body["id"]}}


def test_a_wait_of_zero_answers_the_state_at_once(http: httpx.Client, held: Api) -> None:
    blocker = submit(http, held.name, json=held.hold())
    reply = post_waiting(http, held.name, wait=0, json={"after": blocker})
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"id": reply.json()["id"], "status": "in_queue"}


def test_a_wait_longer_than_the_cap_is_accepted_and_capped(http: httpx.Client, api: Api) -> None:
    reply = post_waiting(http, api.name, wait=86400, json={"long": "wait"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["status"] == "completed"


QUERY_WAIT_ERROR = "?wait= must be a number of seconds (0 or more; waits are capped at 60), got "
BAD_WAITS = [
    pytest.param({"wait": "soon"}, {}, QUERY_WAIT_ERROR + "'soon'", id="not-a-number"),
    pytest.param({"wait": "-1"}, {}, QUERY_WAIT_ERROR + "'-1'", id="negative"),
    pytest.param({"wait": ""}, {}, QUERY_WAIT_ERROR + "''", id="empty"),
    pytest.param({"wait": "nan"}, {}, QUERY_WAIT_ERROR + "'nan'", id="nan"),
    pytest.param(
        {},
        {"Prefer": "wait=later"},
        "the wait in the Prefer header must be a number of seconds (0 or more; waits are capped at 60), got 'later'",
        id="prefer-not-a-number",
    ),
]


@pytest.mark.parametrize(("params", "headers", "message"), BAD_WAITS)
def test_a_bad_wait_answers_400_with_a_message_saying_what_is_wrong_and_queues_nothing(
    http: httpx.Client,
    scheduler: SchedulerClient,
    api: Api,
    params: dict[str, str],
    headers: dict[str, str],
    message: str,
) -> None:
    idle(scheduler, api)
    before = api.called()
    reply = http.post(f"/{api.name}", params=params, headers=headers, json={"refused": True})
    body = assert_error(reply, 400, "wait", "number of seconds")
    assert body["message"] == message, body
    assert scheduler.describe(api.name).queued == 0
    marker = submit(http, api.name, json={"marker": True})
    assert result(http, api.name, marker)["status"] == "completed"
    assert api.called()[len(before) :] == [marker]


def test_a_waiting_post_is_refused_like_a_plain_one(
    http: httpx.Client, scheduler: SchedulerClient, api: Api, short_api: Api
) -> None:
    missing = unique_name("missing")
    assert_error(post_waiting(http, missing, json={"x": 1}), 404, missing)
    assert_error(http.post(f"/{missing}", json={"x": 1}, headers={"Prefer": "wait=5"}), 404, missing)
    assert_error(
        post_waiting(http, api.name, content=b'{"broken": ', headers={"content-type": "application/json"}), 400
    )
    try:
        fill_queue(http, scheduler, short_api.name, short_api.hold, 2)
        refused = post_waiting(http, short_api.name, json={"n": 3})
        assert_error(refused, 429, "full")
        assert int(refused.headers["retry-after"]) >= 1, refused.headers
    finally:
        short_api.release_all()


def test_an_idempotency_key_with_wait_names_the_same_request_which_runs_once(http: httpx.Client, api: Api) -> None:
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = post_waiting(http, api.name, json={"once": True}, headers=key)
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "completed", first.text
    again = post_waiting(http, api.name, json={"once": True}, headers=key)
    assert (again.status_code, again.content) == (200, first.content)
    preferred = http.post(f"/{api.name}", json={"once": True}, headers={**key, "Prefer": "wait=5"})
    assert preferred.content == first.content
    plain = http.post(f"/{api.name}", json={"once": True}, headers=key)
    assert plain.json() == {"id": first.json()["id"]}
    assert api.called().count(first.json()["id"]) == 1
