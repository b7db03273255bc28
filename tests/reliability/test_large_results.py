"""A 1 GiB result: kept whole, streamed back byte for byte through Envoy, while the executor and the results
service stay within 256 MiB of their idle memory (the handler writes it to a file; nothing holds it whole)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator

import httpx
import pytest

from cortado.result import MAX_RESULT_BYTES
from tests.helpers import unique_name, write_project
from tests.meshcalls import result, wait_ready
from tests.reliability.support import Private, private_mesh
from tests.reliability.test_hostile_bodies import MemoryWatch

pytestmark = pytest.mark.reliability

BLOCK = bytes(range(256)) * 4096
"""1 MiB: the file is this block 1024 times."""

WRITES_A_GIB = """
from pathlib import Path

import cortado

BLOCK = bytes(range(256)) * 4096


class Handler:
    def handle_async(self, payload, request_id):
        path = Path(f"{request_id}.bin")
        with path.open("wb") as out:
            for _ in range(payload["mib"]):
                out.write(BLOCK)
        return cortado.Result(path=str(path), content_type="application/x-test")
"""

HEADROOM = 256 * 2**20
"""How much above idle the executor's and the results service's memory may go."""


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Private]:
    with private_mesh(tmp_path_factory.mktemp("large-results")) as running:
        yield running


def test_a_1_gib_result_streams_back_whole_with_bounded_memory(private: Private) -> None:
    name = unique_name()
    private.scheduler.deploy(write_project(private.root, name, WRITES_A_GIB, {"handler": {"timeout": 600}}, None))
    wait_ready(private.scheduler, name)
    size = MAX_RESULT_BYTES
    expected = hashlib.sha256()
    for _ in range(size // len(BLOCK)):
        expected.update(BLOCK)

    watches = {service: MemoryWatch(private.mesh.processes[service].pid) for service in ("executor", "results")}
    for watch in watches.values():
        watch.start()
    began = time.perf_counter()
    request_id = private.http.post(f"/{name}", json={"mib": size // len(BLOCK)}).json()["id"]
    body = result(private.http, name, request_id, wait=300)
    stored = time.perf_counter() - began
    assert body["status"] == "completed", body
    assert (body["result_bytes"], body["result_sha256"]) == (size, expected.hexdigest())

    digest = hashlib.sha256()
    received = 0
    began = time.perf_counter()
    with (
        httpx.Client(base_url=private.mesh.http_url, timeout=300) as client,
        client.stream("GET", body["result_url"]) as reply,
    ):
        assert reply.status_code == 200
        assert reply.headers["content-type"] == "application/x-test"
        for piece in reply.iter_bytes():
            digest.update(piece)
            received += len(piece)
    read = time.perf_counter() - began
    for watch in watches.values():
        watch.stopping.set()
        watch.join()
    assert (received, digest.hexdigest()) == (size, expected.hexdigest())
    for service, watch in watches.items():
        print(
            f"{service}: RSS idle {watch.first / 2**20:.0f} MiB, peak {watch.peak / 2**20:.0f} MiB "
            f"(+{(watch.peak - watch.first) / 2**20:.0f} MiB)"
        )
        assert watch.peak - watch.first < HEADROOM, f"{service} grew by {(watch.peak - watch.first) / 2**20:.0f} MiB"
    print(f"1 GiB result: handled and stored in {stored:.1f} s, read back through Envoy in {read:.1f} s")
