"""Nothing lost (README, "Guarantees"): random bodies, content types, charsets, API names and ids thrown at the HTTP
API.

Every answer must be a JSON object: a success (200 with an id, or a request's state) or an error with a
human-readable `message` — never a 5xx for a problem that is only in the input. Every submission accepted
along the way must complete.
"""

from __future__ import annotations

import contextlib
import json
import string
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote

import grpc
import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cortado.client import SchedulerClient
from tests.faults import final
from tests.helpers import unique_name, write_project
from tests.meshcalls import wait_ready

pytestmark = pytest.mark.reliability

# Says what it was given; never fails, so every accepted request must complete.
HANDLER = """
    class Handler:
        def handle_async(self, payload):
            if isinstance(payload, (bytes, str)):
                return {"type": type(payload).__name__, "length": len(payload)}
            return {"type": type(payload).__name__}
"""


@pytest.fixture(scope="module")
def echo_api(scheduler: SchedulerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    name = unique_name("fuzz")
    scheduler.deploy(write_project(tmp_path_factory.mktemp("fuzz"), name, HANDLER))
    wait_ready(scheduler, name)
    yield name
    with contextlib.suppress(grpc.RpcError):
        scheduler.delete(name, force=True)


CHARSETS = [
    "utf-8",
    "UTF-8",
    "utf8",
    "latin-1",
    "ISO-8859-1",
    "ascii",
    "us-ascii",
    "utf-16",
    "utf-16-le",
    "UTF-32",
    "cp1252",
    "shift_jis",
    "koi8-r",
    "big5",
    "x-unknown-charset",
    "",
    "rot13",
    "base64",
    "zlib",
    "idna",
]
MEDIA_TYPES = [
    "application/json",
    "Application/JSON",
    "APPLICATION/JSON",
    "text/plain",
    "Text/Plain",
    "TEXT/PLAIN",
    "application/octet-stream",
    "image/png",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "application/grpc-web",
    "application/json+fake",
    "text/html",
    "*/*",
    "nonsense",
    "",
]
# Printable ASCII (what an HTTP header value can carry), quotes and separators included.
HEADER_TEXT = st.text(st.sampled_from(string.ascii_letters + string.digits + " -_.;=/\"'+*,"), max_size=40)


@st.composite
def content_types(draw: st.DrawFn) -> str | None:
    """None (no header), or a header value: random text, a media type, or one with a charset parameter.

    application/grpc is left out: a request carrying it is a gRPC call and gets gRPC's framing, not JSON.
    """
    value = draw(raw_content_types())
    if value is None or not value.strip() or value.strip().lower().startswith("application/grpc"):
        return None
    return value.strip()  # a header value cannot start or end with blanks


@st.composite
def raw_content_types(draw: st.DrawFn) -> str | None:
    choice = draw(st.integers(0, 4))
    if choice == 0:
        return None
    if choice == 1:
        return draw(HEADER_TEXT)
    media = draw(st.sampled_from(MEDIA_TYPES) | HEADER_TEXT.filter(lambda t: "/" in t))
    if choice == 2:
        return media
    charset = draw(st.sampled_from(CHARSETS) | HEADER_TEXT)
    quoted = draw(st.booleans())
    name = draw(st.sampled_from(["charset", "Charset", "CHARSET"]))
    extra = draw(st.sampled_from(["", "; q=1", "; boundary=x", ";"]))
    return f"{media}; {name}={json.dumps(charset) if quoted else charset}{extra}"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    choice = draw(st.integers(0, 4))
    if choice == 0:
        return draw(st.binary(max_size=300))
    if choice == 1:
        return json.dumps(draw(JSON_VALUES)).encode()
    if choice == 2:
        encoding = draw(st.sampled_from(["utf-8", "utf-16", "latin-1", "utf-32", "shift_jis"]))
        return draw(st.text(max_size=60)).encode(encoding, errors="replace")
    if choice == 3:
        text = json.dumps(draw(JSON_VALUES))
        cut = draw(st.integers(0, len(text)))
        return (text[:cut] + draw(st.sampled_from(["", "}", "]", ",", "NaN", "\x00", "\ufeff"]))).encode()
    return draw(st.sampled_from([b"", b"NaN", b"Infinity", b"1e999999", b"9" * 5000, b"[" * 5000, b"\xef\xbb\xbf{}"]))


API_NAME_TEXT = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"]) | st.sampled_from("-_.~%/?#"), min_size=1, max_size=50
)


@st.composite
def api_names(draw: st.DrawFn, deployed: str) -> str:
    """A URL path segment: the deployed API, a valid but unknown name, or anything at all (percent-encoded)."""
    choice = draw(st.integers(0, 3))
    if choice <= 1:
        return deployed
    if choice == 2:
        return draw(st.from_regex(r"[a-z][a-z0-9-]{0,41}", fullmatch=True))
    return quote(draw(API_NAME_TEXT), safe="")


REQUEST_IDS = (
    st.from_regex(r"[0-9a-f]{32}", fullmatch=True)
    | st.text(st.sampled_from(string.ascii_letters + string.digits + "-_.~"), min_size=1, max_size=80)
    | API_NAME_TEXT.map(lambda t: quote(t, safe=""))
)
WAITS = st.none() | st.sampled_from(["0", "0.1", "-1", "abc", "1e9", "NaN", "", "0x10", "inf"])


def check_answer(reply: httpx.Response, what: str) -> dict[str, Any]:
    """A JSON object; a success or an error with a message; no 5xx."""
    assert reply.status_code < 500, (what, reply.status_code, reply.text)
    try:
        body = reply.json()
    except ValueError:
        raise AssertionError((what, reply.status_code, reply.headers.get("content-type"), reply.text)) from None
    assert isinstance(body, dict), (what, reply.status_code, body)
    if reply.status_code != 200:
        message = body.get("message")
        assert isinstance(message, str) and message.strip(), (what, reply.status_code, body)
    return body


def test_random_input_gets_json_answers_never_a_5xx_and_everything_accepted_completes(
    http: httpx.Client, echo_api: str
) -> None:
    accepted: list[tuple[str, str]] = []
    known_ids: list[str] = []

    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    # Cases found before, always tried: ids that are no valid NATS key, and a wait that is not a number.
    @example(echo_api, b"{}", "application/json", "a:b", None, False)
    @example(echo_api, b"x", "text/plain; charset=utf-16", "~", "0.1", False)
    @example(echo_api, b"[1]", "Application/JSON; Charset=latin-1", "x", "NaN", True)
    @given(
        api=api_names(echo_api),
        body=bodies(),
        content_type=content_types(),
        request_id=REQUEST_IDS,
        wait=WAITS,
        use_known_id=st.booleans(),
    )
    def throw(
        api: str, body: bytes, content_type: str | None, request_id: str, wait: str | None, use_known_id: bool
    ) -> None:
        headers = {"content-type": content_type} if content_type is not None else {}
        what = f"POST /{api} {headers} {body[:80]!r}"
        reply = http.post(f"/{api}", content=body, headers=headers)
        answer = check_answer(reply, what)
        if reply.status_code == 200:
            assert set(answer) == {"id"}, (what, answer)
            assert len(answer["id"]) == 32, (what, answer)
            accepted.append((api, answer["id"]))
            known_ids.append(answer["id"])
        else:
            assert reply.status_code in (400, 404, 413), (what, reply.status_code, answer)

        if use_known_id and known_ids:
            request_id = known_ids[-1]
        params = {"wait": wait} if wait is not None else {}
        what = f"GET /{api}/{request_id} {params}"
        reply = http.get(f"/{api}/{request_id}", params=params)
        answer = check_answer(reply, what)
        if reply.status_code == 200:
            assert answer.get("id") == unquote(request_id) and answer.get("status") in (
                "in_queue",
                "in_progress",
                "completed",
                "failed",
            ), (what, answer)
        else:
            assert reply.status_code in (400, 404), (what, reply.status_code, answer)
            if reply.status_code == 404 and answer.get("status") is not None:
                assert answer["status"] == "not_found", (what, answer)

    throw()
    assert accepted, "no example was accepted: the strategies are off"
    for api, request_id in accepted:
        body = final(http, api, request_id)
        assert body["status"] == "completed", body
