"""API keys on the front door, on a mesh of its own started with CORTADO_API_KEYS=on: every refusal reason over
HTTP through Envoy and over gRPC, the scope (endpoints included), revocation and expiry taking effect, nothing
queued or read for a refused call, and the CLI's `keys` commands."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import grpc
import httpx
import pytest

from cortado import _chaining, _names, _nats, _natsauth
from cortado._clientcommon import PermissionDenied, Unauthenticated
from cortado.cli import main
from cortado.client import AsyncClient, Client, SchedulerClient
from cortado.mesh import LocalMesh
from cortado.v1 import control_pb2, records_pb2
from tests.helpers import eventually, unique_name, write_project
from tests.meshcalls import MESH_ENV, wait_ready

pytestmark = pytest.mark.e2e

ECHO = """
class Handler:
    def handle_async(self, payload, request_id):
        return {"echo": payload}
"""


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    """A mesh whose front door requires API keys."""
    with LocalMesh(tmp_path_factory.mktemp("keyed"), env={**MESH_ENV, "CORTADO_API_KEYS": "on"}) as running:
        yield running


@pytest.fixture(scope="module")
def control(keyed: LocalMesh) -> Iterator[SchedulerClient]:
    with SchedulerClient(keyed.scheduler_address) as client:
        yield client


@pytest.fixture(scope="module")
def apis(keyed: LocalMesh, control: SchedulerClient, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """Two APIs on the keyed mesh; the first also answers at the endpoint /<first>-door."""
    folder = tmp_path_factory.mktemp("projects")
    first, second = unique_name("kept"), unique_name("other")
    write_project(folder, first, ECHO, {"networking": {"endpoint": f"{first}-door"}})
    control.deploy(folder / first)
    write_project(folder, second, ECHO)
    control.deploy(folder / second)
    for name in (first, second):
        wait_ready(control, name)
    return first, second


@pytest.fixture
def web(keyed: LocalMesh) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=keyed.http_url, timeout=30) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_every_refusal_over_http_is_a_401_or_403_naming_its_reason_and_queues_nothing(
    web: httpx.Client, control: SchedulerClient, apis: tuple[str, str]
) -> None:
    first, second = apis
    key = control.create_api_key([first], name=unique_name("http")).key
    cases = {
        "none": ({}, 401, "an API key is required: send it in the header Authorization, as Bearer followed by the key"),
        "malformed": (bearer("let-me-in"), 401, "the API key is malformed"),
        "unknown": (bearer(key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")), 401, "is not valid"),
        "out of scope": (bearer(key), 403, f"may not call API '{second}' (it may call: {first})"),
    }
    for case, (headers, status, reason) in cases.items():
        answer = web.post(f"/{second}" if case == "out of scope" else f"/{first}", json={}, headers=headers)
        assert answer.status_code == status, (case, answer.text)
        assert answer.headers["content-type"].startswith("application/json")
        assert reason in answer.json()["message"], (case, answer.text)
    assert control.describe(first).queued == 0 and control.describe(second).queued == 0
    # Reads and cancels are refused the same way, before anything is read.
    some_id = uuid.uuid4().hex
    assert web.get(f"/{first}/{some_id}").status_code == 401
    assert web.get(f"/{second}/{some_id}", headers=bearer(key)).status_code == 403
    assert web.delete(f"/{second}/{some_id}", headers=bearer(key)).status_code == 403
    assert web.post(f"/{first}?wait=5", json={}).status_code == 401


def test_a_valid_key_submits_reads_and_cancels_at_the_api_and_its_endpoint(
    web: httpx.Client, control: SchedulerClient, apis: tuple[str, str]
) -> None:
    first, _ = apis
    key = control.create_api_key([first]).key
    for path in (f"/{first}", f"/{first}-door"):
        answer = web.post(path, json={"n": 1}, headers=bearer(key))
        assert answer.status_code == 200, answer.text
        request_id = answer.json()["id"]
        final = web.get(f"{path}/{request_id}", params={"wait": 20}, headers=bearer(key)).json()
        assert (final["status"], final["result"]) == ("completed", {"echo": {"n": 1}})
        assert web.delete(f"{path}/{request_id}", headers=bearer(key)).status_code == 409
    one_call = web.post(f"/{first}?wait=20", json={"n": 2}, headers=bearer(key))
    assert one_call.json()["result"] == {"echo": {"n": 2}}


def test_revocation_and_expiry_take_effect_within_seconds(
    web: httpx.Client, control: SchedulerClient, apis: tuple[str, str]
) -> None:
    first, _ = apis
    name = unique_name("revoked")
    key = control.create_api_key([first], name=name).key
    assert web.post(f"/{first}", json={}, headers=bearer(key)).status_code == 200
    revoked = control.revoke_api_key(name)
    assert revoked.HasField("revoked_at")

    def refused() -> httpx.Response | None:
        answer = web.post(f"/{first}", json={}, headers=bearer(key))
        return answer if answer.status_code == 401 else None

    answer = eventually(refused, 2, what="the revoked key refused")
    assert f"the API key '{name}' was revoked at" in answer.json()["message"]

    short = control.create_api_key([first], expires_in_seconds=1.5)
    assert web.post(f"/{first}", json={}, headers=bearer(short.key)).status_code == 200
    time.sleep(max(0.0, short.record.expires_at.ToDatetime().timestamp() - time.time()) + 0.2)
    expired = web.post(f"/{first}", json={}, headers=bearer(short.key))
    assert expired.status_code == 401 and "expired at" in expired.json()["message"]


def test_a_key_over_its_rate_gets_429_with_retry_after_and_reads_are_not_counted(
    web: httpx.Client, control: SchedulerClient, apis: tuple[str, str]
) -> None:
    first, _ = apis
    name = unique_name("limited")
    key = control.create_api_key([first], name=name, rate_per_second=0.5, burst=2).key
    answers = [web.post(f"/{first}", json={}, headers=bearer(key)) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429], [a.text for a in answers]
    limited = answers[2]
    assert limited.headers["retry-after"] == "2"
    assert limited.json()["message"] == f"the API key '{name}' may make 0.5 requests a second (burst 2): retry after 2s"
    # Reads are not counted; the refused submit queued nothing.
    first_id = answers[0].json()["id"]
    assert web.get(f"/{first}/{first_id}", params={"wait": 10}, headers=bearer(key)).status_code == 200
    with pytest.raises(grpc.RpcError) as refused:
        control.create_api_key([first], rate_per_second=-1)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "rate must be from 0" in str(refused.value.details())


async def test_grpc_clients_send_the_key_and_refusals_are_their_named_errors(
    keyed: LocalMesh, control: SchedulerClient, apis: tuple[str, str]
) -> None:
    first, second = apis
    key = control.create_api_key([first]).key
    with Client(keyed.grpc_address, api_key=key) as client:
        view = client.submit_and_wait(first, b'{"n": 3}', "application/json", wait=20)
        assert view.status == records_pb2.REQUEST_STATUS_COMPLETED
        assert [v.status for v in client.results(first, [view.id])] == [records_pb2.REQUEST_STATUS_COMPLETED]
        with pytest.raises(grpc.RpcError) as denied:
            client.get(second, view.id)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # A stream answers each item: one in scope accepted, one out of scope refused, and the stream goes on.
        items = [Client.request(first, b"{}", "application/json"), Client.request(second, b"{}", "application/json")]
        answers = list(client.submit_many(items))
        assert answers[0].id and answers[1].status.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    with Client(keyed.grpc_address) as anonymous:
        with pytest.raises(grpc.RpcError) as missing:
            anonymous.submit(first, b"{}", "application/json")
        assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(LookupError, match="an API key is required"):
            list(anonymous.results(first, [view.id]))
    async with AsyncClient(keyed.grpc_address, api_key=key) as scoped:
        assert (await scoped.get(first, view.id)).status == records_pb2.REQUEST_STATUS_COMPLETED
        with pytest.raises(PermissionDenied, match=f"may not call API '{second}'"):
            await scoped.submit(second, b"{}", "application/json")
    async with AsyncClient(keyed.grpc_address) as nobody:
        with pytest.raises(Unauthenticated):
            await nobody.cancel(first, view.id)


def cortado(keyed: LocalMesh, *argv: str, key: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    env = {"CORTADO_API_KEY": key} if key else {}
    with mock.patch.dict(os.environ, env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*argv, "--scheduler", keyed.scheduler_address, "--endpoint", keyed.grpc_address])
    return code, out.getvalue(), err.getvalue()


def test_the_cli_creates_lists_and_revokes_keys_and_submits_with_one(
    keyed: LocalMesh, apis: tuple[str, str], tmp_path: Path
) -> None:
    first, _ = apis
    name = unique_name("cli")
    code, out, err = cortado(keyed, "keys", "create", "--api", first, "--name", name, "--expires", "30d")
    assert code == 0, err
    key = out.split(": ", 1)[1].split("\n", 1)[0]
    assert out.startswith(f"API key '{name}' for {first}: ck_") and "shown only this once" in out
    assert "it expires at" in out
    code, out, _ = cortado(keyed, "keys", "create", "--api", first, "--name", name)
    assert code == 1
    code, out, err = cortado(keyed, "keys", "list", "-o", "json")
    [listed] = [k for k in json.loads(out) if k["name"] == name]
    assert listed["apis"] == [first] and listed["expires_at"] and listed["revoked_at"] is None
    assert key not in out and "secret" not in out
    code, out, err = cortado(keyed, "submit", first, "--json", '{"n": 4}', key=key)
    assert code == 0, err
    code, out, err = cortado(keyed, "submit", first, "--json", "{}")
    assert code == 1 and "an API key is required" in err
    code, out, err = cortado(keyed, "keys", "revoke", name)
    assert code == 0 and f"API key '{name}'" in out and "revoked at" in out
    code, _, err = cortado(keyed, "keys", "revoke", "no-such-key")
    assert code == 1 and "no API key has the id or name 'no-such-key'" in err
    code, _, err = cortado(keyed, "keys", "create", "--api", "no-such-api")
    assert code == 1 and "API 'no-such-api' is not deployed" in err


async def test_the_keys_bucket_holds_hashes_never_a_key(
    keyed: LocalMesh, control: SchedulerClient, apis: tuple[str, str]
) -> None:
    made = control.create_api_key([apis[0]], name=unique_name("stored"))
    secret = made.key.split("_", 2)[2]
    nc = await _nats.connect(keyed.nats_url, "test-keys", credentials=keyed.credentials[_natsauth.ADMIN])
    try:
        entry = await (await nc.jetstream().key_value(_names.API_KEYS_BUCKET)).get(made.record.id)
    finally:
        await nc.close()
    assert entry.value is not None
    assert secret.encode() not in entry.value and made.key.encode() not in entry.value
    stored = control_pb2.ApiKey.FromString(entry.value)
    assert stored.secret_sha256 == hashlib.sha256(secret.encode()).digest()
    assert made.record.secret_sha256 == b""  # nor is the hash answered to clients
    assert all(record.secret_sha256 == b"" for record in control.api_keys())


# Chaining with keys on: the mesh vouches for its own handlers ------------------------------------------------------

CHAINER = """
import json
import urllib.error
import urllib.request

import httpx
import requests


def call(client, method, url, body=None):
    headers = {"Content-Type": "application/json"}
    if client == "requests":
        reply = requests.request(method, url, data=body, headers=headers, timeout=30)
        return reply.status_code, reply.text
    if client == "httpx":
        reply = httpx.request(method, url, content=body, headers=headers, timeout=30)
        return reply.status_code, reply.text
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


class Handler:
    def handle_async(self, payload):
        client, target = payload["client"], f"http://api-{payload['target']}:8888"
        status, text = call(client, "POST", target + "/", json.dumps({"from": "a handler"}).encode())
        answer = {"status": status, "body": json.loads(text)}
        if status == 200:
            read, text = call(client, "GET", f"{target}/{answer['body']['id']}?wait=20")
            answer["read"] = {"status": read, "body": json.loads(text)}
        if payload.get("outside"):
            answer["outside"] = call(client, "GET", payload["outside"])[1]
        return answer
"""


@pytest.fixture(scope="module")
def chainers(
    keyed: LocalMesh, control: SchedulerClient, apis: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, str]:
    """Two chaining APIs: one whose `_chaining.allow` lists only the first of `apis`, one with no list."""
    folder = tmp_path_factory.mktemp("chainers")
    listed, open_ = unique_name("listed"), unique_name("open")
    write_project(folder, listed, CHAINER, {"chaining": {"allow": [apis[0]]}})
    write_project(folder, open_, CHAINER)
    for name in (listed, open_):
        control.deploy(folder / name)
    for name in (listed, open_):
        wait_ready(control, name)
    return listed, open_


@pytest.fixture(scope="module")
def outside() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A server outside the mesh, reached by host name (through the proxy), that keeps the headers it got."""
    seen: list[dict[str, str]] = []

    class Keep(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"outside")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Keep)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://localhost:{server.server_address[1]}/", seen
    server.shutdown()
    server.server_close()


def run_keyed(web: httpx.Client, control: SchedulerClient, api: str, payload: dict[str, object]) -> dict[str, object]:
    """Submit to api with a key of its own and wait for its result."""
    key = control.create_api_key([api], name=unique_name("run")).key
    request_id = web.post(f"/{api}", json=payload, headers=bearer(key)).json()["id"]
    body = web.get(f"/{api}/{request_id}", params={"wait": 30}, headers=bearer(key)).json()
    assert body["status"] == "completed", body
    result: dict[str, object] = body["result"]
    return result


@pytest.mark.parametrize("client", ["urllib", "requests", "httpx"])
def test_a_handler_calls_an_api_its_list_allows_without_a_key_of_its_own(
    web: httpx.Client,
    control: SchedulerClient,
    apis: tuple[str, str],
    chainers: tuple[str, str],
    outside: tuple[str, list[dict[str, str]]],
    client: str,
) -> None:
    url, seen = outside
    answer = run_keyed(web, control, chainers[0], {"client": client, "target": apis[0], "outside": url})
    assert answer["status"] == 200, answer
    assert answer["read"] == {
        "status": 200,
        "body": {**answer["read"]["body"], "status": "completed", "result": {"echo": {"from": "a handler"}}},  # type: ignore[index]
    }
    # The token went to the mesh only: the outside server saw neither it nor any credential.
    assert answer["outside"] == "outside"
    assert seen and not any(k in headers for headers in seen for k in ("authorization", "proxy-authorization"))


def test_a_handler_may_not_call_an_api_its_list_leaves_out(
    web: httpx.Client, control: SchedulerClient, apis: tuple[str, str], chainers: tuple[str, str]
) -> None:
    listed, open_ = chainers
    answer = run_keyed(web, control, listed, {"client": "requests", "target": apis[1]})
    assert answer["status"] == 403
    assert answer["body"]["message"] == (  # type: ignore[index]
        f"API '{listed}' may not call API '{apis[1]}': its _chaining.allow lists {apis[0]}"
    )
    # With no list, every API.
    assert run_keyed(web, control, open_, {"client": "urllib", "target": apis[1]})["status"] == 200


def test_a_forged_or_foreign_chaining_token_is_refused(
    keyed: LocalMesh, web: httpx.Client, apis: tuple[str, str], chainers: tuple[str, str]
) -> None:
    forged = f"cc_{chainers[1]}." + "0" * 64
    reply = web.post(f"/{apis[0]}", json={}, headers=bearer(forged))
    assert (reply.status_code, reply.json()["message"]) == (401, "the chaining token is not valid")
    secret = keyed.chain_secret_file.read_bytes().strip()
    ghost = _chaining.token_for(secret, "ghost")
    reply = web.post(f"/{apis[0]}", json={}, headers=bearer(ghost))
    assert (reply.status_code, reply.json()["message"]) == (401, "the calling API 'ghost' is not deployed")
    # As a proxy address's user information (Basic), over any port: the same judgement.
    reply = web.post(f"/{apis[1]}", json={}, auth=("cortado", _chaining.token_for(secret, chainers[0])))
    assert reply.status_code == 403 and "its _chaining.allow lists" in reply.json()["message"]
