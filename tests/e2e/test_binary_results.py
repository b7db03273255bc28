"""Binary and large results: bytes, files and big JSON, kept whole and streamed back over HTTP and gRPC."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import urllib.error
import urllib.request
import wave
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from cortado._clientcommon import NoResult, NotFound
from cortado.asyncclient import AsyncClient
from cortado.cli import main
from cortado.client import Client
from cortado.mesh import LocalMesh
from cortado.v1 import records_pb2
from tests.e2e.cli_support import Run, flags
from tests.meshcalls import Deploy, result, submit

pytestmark = pytest.mark.e2e

BINARY = """
from pathlib import Path

import cortado


class Handler:
    def handle_async(self, payload, request_id):
        kind = payload["kind"]
        size = payload.get("size", 0)
        data = bytes(i % 251 for i in range(size))
        if kind == "bytes":
            return data
        if kind == "typed":
            return cortado.Result(data=data, content_type="image/png")
        if kind == "path":
            out = Path("outputs")
            out.mkdir(exist_ok=True)
            path = out / f"{request_id}.wav"
            path.write_bytes(data)
            return path
        if kind == "typed-path":
            path = Path(f"{request_id}.out")
            path.write_bytes(data)
            return cortado.Result(path=str(path), content_type="audio/ogg; codecs=opus")
        if kind == "outside":
            return Path("/etc/hostname")
        if kind == "missing":
            return Path("nothing-here.bin")
        if kind == "json":
            return {"blob": "z" * size}
        raise ValueError(kind)
"""

ECHO_BYTES = """
class Handler:
    def handle_async(self, payload):
        return payload  # the body's bytes, for any content type that is not JSON or text
"""

BATCH = """
class Handler:
    def handle_batch(self, payloads, request_ids):
        return [bytes([p["n"]]) * p["size"] for p in payloads]
"""

MIB = 1024 * 1024


def _expected(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


def _completed(http: httpx.Client, api: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    request_id = submit(http, api, json=payload)
    body = result(http, api, request_id)
    assert body["status"] == "completed", body
    return request_id, body


def _read(http: httpx.Client, api: str, request_id: str) -> httpx.Response:
    reply = http.get(f"/{api}/{request_id}/result")
    assert reply.status_code == 200, reply.text
    return reply


@pytest.fixture(scope="module")
def binary_api(scheduler: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.helpers import unique_name, write_project
    from tests.meshcalls import wait_ready

    name = unique_name()
    scheduler.deploy(write_project(tmp_path_factory.mktemp("binary"), name, BINARY, None, None))
    wait_ready(scheduler, name)
    yield name
    scheduler.delete(name, force=True)


def test_small_bytes_are_named_by_the_record_and_read_at_result_url_with_their_type(
    http: httpx.Client, binary_api: str
) -> None:
    request_id, body = _completed(http, binary_api, {"kind": "typed", "size": 1000})
    assert "result" not in body
    assert body["result_url"] == f"/{binary_api}/{request_id}/result"
    assert (body["result_content_type"], body["result_bytes"]) == ("image/png", 1000)
    reply = _read(http, binary_api, request_id)
    assert reply.headers["content-type"] == "image/png"
    assert reply.content == _expected(1000)


def test_plain_bytes_are_octet_stream_and_a_returned_path_guesses_its_type(http: httpx.Client, binary_api: str) -> None:
    request_id, body = _completed(http, binary_api, {"kind": "bytes", "size": 10})
    assert body["result_content_type"] == "application/octet-stream"
    assert _read(http, binary_api, request_id).content == _expected(10)
    request_id, body = _completed(http, binary_api, {"kind": "path", "size": 5})
    assert body["result_content_type"] in ("audio/x-wav", "audio/wav")
    assert _read(http, binary_api, request_id).content == _expected(5)


def test_an_empty_binary_result_is_kept_as_empty(http: httpx.Client, binary_api: str) -> None:
    request_id, body = _completed(http, binary_api, {"kind": "bytes", "size": 0})
    assert (body["result_content_type"], body["result_bytes"]) == ("application/octet-stream", 0)
    assert _read(http, binary_api, request_id).content == b""


@pytest.mark.parametrize("kind", ["typed", "typed-path"])
def test_a_large_result_goes_to_the_object_store_and_streams_back_byte_for_byte(
    http: httpx.Client, grpc_client: Client, binary_api: str, kind: str
) -> None:
    size = 5 * MIB + 123
    request_id, body = _completed(http, binary_api, {"kind": kind, "size": size})
    expected = _expected(size)
    assert body["result_bytes"] == size
    assert body["result_sha256"] == hashlib.sha256(expected).hexdigest()
    reply = _read(http, binary_api, request_id)
    assert reply.headers["content-type"] == ("image/png" if kind == "typed" else "audio/ogg; codecs=opus")
    assert hashlib.sha256(reply.content).hexdigest() == body["result_sha256"]
    # urllib too, reading the streamed answer in pieces.
    url = f"{http.base_url}".rstrip("/") + body["result_url"]
    with urllib.request.urlopen(url, timeout=60) as answer:
        digest = hashlib.sha256()
        while piece := answer.read(65536):
            digest.update(piece)
    assert digest.hexdigest() == body["result_sha256"]
    # gRPC: the record names it, ReadResult streams it in chunks of at most 1 MiB.
    view = grpc_client.get(binary_api, request_id)
    assert (view.result_size, view.result_sha256, view.result_json, view.result_data) == (
        size,
        body["result_sha256"],
        b"",
        b"",
    )
    content_type, chunks = grpc_client.read_result(binary_api, request_id)
    pieces = list(chunks)
    assert max(len(p) for p in pieces) <= MIB and len(pieces) > 1
    assert content_type == reply.headers["content-type"] and b"".join(pieces) == expected


def test_json_too_large_for_the_record_is_served_whole_at_its_url(http: httpx.Client, binary_api: str) -> None:
    request_id, body = _completed(http, binary_api, {"kind": "json", "size": 3 * MIB})
    assert "result" not in body and body["result_content_type"] == "application/json"
    reply = _read(http, binary_api, request_id)
    assert reply.headers["content-type"] == "application/json"
    assert reply.content == b'{"blob":"' + b"z" * (3 * MIB) + b'"}'
    # A small JSON result is inline in the record, and also readable at the result URL.
    request_id, body = _completed(http, binary_api, {"kind": "json", "size": 3})
    assert body["result"] == {"blob": "zzz"}
    reply = _read(http, binary_api, request_id)
    assert (reply.headers["content-type"], reply.content) == ("application/json", b'{"blob":"zzz"}')


def test_binary_payloads_round_trip_byte_for_byte(
    deploy: Deploy, http: httpx.Client, grpc_client: Client, mesh: LocalMesh
) -> None:
    api = deploy(ECHO_BYTES)
    for size in (0, 1, 300_000, 3 * MIB + 7):
        payload = os.urandom(size)
        request_id = submit(http, api, content=payload, headers={"content-type": "application/octet-stream"})
        body = result(http, api, request_id)
        assert body["status"] == "completed", body
        assert body["result_bytes"] == size
        assert hashlib.sha256(_read(http, api, request_id).content).digest() == hashlib.sha256(payload).digest()
    payload = os.urandom(2 * MIB)
    request_id = grpc_client.submit(api, payload, content_type="application/x-anything")
    grpc_client.wait(api, request_id, timeout=60)
    _, chunks = grpc_client.read_result(api, request_id)
    assert hashlib.sha256(b"".join(chunks)).digest() == hashlib.sha256(payload).digest()


def test_a_batch_handler_returns_bytes_per_request(deploy: Deploy, http: httpx.Client) -> None:
    api = deploy(BATCH, api={"handler": {"max_batch_size": 4, "batch_interval": "50ms"}})
    ids = [submit(http, api, json={"n": n, "size": (2 * MIB if n == 3 else 10)}) for n in range(4)]
    for n, request_id in enumerate(ids):
        assert result(http, api, request_id)["status"] == "completed"
        assert _read(http, api, request_id).content == bytes([n]) * (2 * MIB if n == 3 else 10)


def test_a_path_outside_the_working_directory_or_missing_fails_with_a_clear_error(
    http: httpx.Client, binary_api: str
) -> None:
    body = result(http, binary_api, submit(http, binary_api, json={"kind": "outside"}))
    assert (body["status"], body["error"]["type"]) == ("failed", "InvalidResult")
    assert (
        "returned the path '/etc/hostname', which is outside the handler's working directory"
        in (body["error"]["message"])
    )
    body = result(http, binary_api, submit(http, binary_api, json={"kind": "missing"}))
    assert body["error"]["message"] == "handle_async returned the path 'nothing-here.bin', which does not exist"


def test_reading_the_result_of_an_unknown_unfinished_or_failed_request_says_why(
    http: httpx.Client, grpc_client: Client, binary_api: str
) -> None:
    unknown = "0" * 32
    reply = http.get(f"/{binary_api}/{unknown}/result")
    assert reply.status_code == 404
    assert reply.json()["message"] == (
        f"request '{unknown}' of API '{binary_api}' was not found: the id is unknown or its result has expired"
    )
    failed = submit(http, binary_api, json={"kind": "boom"})
    assert result(http, binary_api, failed)["status"] == "failed"
    reply = http.get(f"/{binary_api}/{failed}/result")
    assert reply.status_code == 409
    assert reply.json()["message"] == (
        f"request '{failed}' of API '{binary_api}' is failed: only a completed request has a result"
    )
    with pytest.raises(grpc.RpcError) as caught:
        grpc_client.read_result(binary_api, failed)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{http.base_url}".rstrip("/") + f"/{binary_api}/{failed}/result", timeout=30)
    assert refused.value.code == 409
    assert json.loads(refused.value.read())["message"].endswith("only a completed request has a result")


async def test_the_async_client_streams_a_result_and_names_its_errors(
    http: httpx.Client, mesh: LocalMesh, binary_api: str
) -> None:
    request_id, body = _completed(http, binary_api, {"kind": "typed", "size": 2 * MIB + 5})
    async with AsyncClient(mesh.grpc_address) as client:
        content_type, chunks = await client.read_result(binary_api, request_id)
        data = b"".join([chunk async for chunk in chunks])
        assert (content_type, hashlib.sha256(data).hexdigest()) == ("image/png", body["result_sha256"])
        view = await client.get(binary_api, request_id)
        assert view.status == records_pb2.REQUEST_STATUS_COMPLETED and view.result_content_type == "image/png"
        with pytest.raises(NotFound):
            await client.read_result(binary_api, "f" * 32)
        failed = submit(http, binary_api, json={"kind": "boom"})
        result(http, binary_api, failed)
        with pytest.raises(NoResult, match="is failed: only a completed request has a result"):
            await client.read_result(binary_api, failed)


README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_tone_handler_serves_a_wav_file(deploy: Deploy, http: httpx.Client) -> None:
    blocks: list[str] = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    [source] = [block for block in blocks if "cortado.Result(path=out" in block]
    api = deploy(source)
    request_id, body = _completed(http, api, {"seconds": 60, "hz": 220})
    assert (body["result_content_type"], body["result_bytes"]) == ("audio/wav", 60 * 16000 * 2 + 44)
    reply = _read(http, api, request_id)
    assert hashlib.sha256(reply.content).hexdigest() == body["result_sha256"]
    with wave.open(io.BytesIO(reply.content)) as audio:
        assert (audio.getframerate(), audio.getnframes()) == (16000, 60 * 16000)


def test_the_cli_names_a_binary_result_and_saves_any_result_to_a_file(
    http: httpx.Client, binary_api: str, mesh: LocalMesh, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def cli(*argv: str) -> Run:
        capsys.readouterr()
        code = main([*argv, *flags(mesh)])
        out, err = capsys.readouterr()
        return Run(code, out, err)

    request_id, body = _completed(http, binary_api, {"kind": "typed", "size": 3 * MIB})
    target = tmp_path / "picture.png"
    run = cli("result", binary_api, request_id, "--save", str(target), "-o", "json")
    assert run.code == 0, run.err
    shown = json.loads(run.out)
    assert shown["result_url"] == body["result_url"]
    assert (shown["result_content_type"], shown["result_bytes"], shown["result_sha256"], shown["saved"]) == (
        "image/png",
        3 * MIB,
        body["result_sha256"],
        str(target),
    )
    assert "result" not in shown and target.read_bytes() == _expected(3 * MIB)
    request_id, _ = _completed(http, binary_api, {"kind": "json", "size": 2})
    run = cli("result", binary_api, request_id, "--save", str(tmp_path / "small.json"))
    assert run.code == 0 and json.loads(run.out)["result"] == {"blob": "zz"}
    assert (tmp_path / "small.json").read_bytes() == b'{"blob":"zz"}'
    run = cli("result", binary_api, request_id, "--save", str(tmp_path / "no" / "such" / "dir.bin"))
    assert run.code == 1 and "cannot write" in run.err and "No such file or directory" in run.err
