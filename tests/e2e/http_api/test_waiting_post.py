"""POST /<api>?wait=<s> and Prefer: wait=<s> (README, "The HTTP API"): a submission that answers the final record
when it comes in time."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import httpx
import pytest

from cortado.client import SchedulerClient
from cortado.mesh import LocalMesh
from tests.e2e.http_api.support import Api, assert_error, get, idle
from tests.helpers import unique_name
from tests.meshcalls import fill_queue, result, submit

pytestmark = pytest.mark.e2e


# --- POST /<api>?wait=<s> and Prefer: wait=<s> -----------------------------------------------------------------------


def post_waiting(http: httpx.Client, api: str, wait: str | float = 30, **request: Any) -> httpx.Response:
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
