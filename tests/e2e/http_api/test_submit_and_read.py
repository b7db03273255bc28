"""The HTTP API (README, "The HTTP API"): POST /<api> and GET /<api>/<id>, through real Envoy in front of the real
services."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.e2e.http_api.support import HEX, Api, assert_error, assert_recent_rfc3339_utc, get, status_becomes
from tests.helpers import eventually
from tests.meshcalls import result, submit

pytestmark = pytest.mark.e2e


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
