"""Hostile JSON bodies cannot take ingest down: several 32 MiB bodies built to cost json.loads the most, sent
at once through Envoy, are refused naming the limit they break, while ordinary submits keep being answered
promptly and ingest's memory stays under its container's 512 Mi."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest

from cortado.runtime.limits import MAX_BODY_BYTES
from tests.reliability.support import Private, private_mesh

pytestmark = pytest.mark.reliability

INGEST_MEMORY_LIMIT = 512 * 2**20
"""The ingest container's memory limit (deploy/k8s/base/ingest.yaml)."""
TRICKLE_INTERVAL = 0.05
STALL = 2.0
"""An ordinary submit answered later than this was held up by the hostile ones."""

VALUES = (
    "the JSON holds more than 1,000,000 values; the limit is 1,000,000 values "
    "(each array, object, string, number, true, false and null counts one)"
)
DEPTH = "the JSON is nested more than 128 levels deep; the limit is 128 levels"


SIZE = MAX_BODY_BYTES - 1024
"""Just under the limit: Envoy's transcoder counts the request's name and Content-Type in it too."""


def filled(item: bytes, opening: bytes = b"[", closing: bytes = b"]") -> bytes:
    """opening item,item,... closing: as many items as fit in SIZE."""
    count = (SIZE - len(opening) - len(closing) + 1) // (len(item) + 1)
    return opening + b",".join([item] * count) + closing


HOSTILE = {
    # About 24 bytes of json.loads heap per byte: some 770 MiB for one body.
    "empty objects": (filled(b"{}"), VALUES),
    "one-item arrays": (filled(b"[1]"), VALUES),
    "deep nesting": (b"[" * SIZE, DEPTH),
}


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Private]:
    with private_mesh(tmp_path_factory.mktemp("hostile")) as running:
        yield running


class MemoryWatch(threading.Thread):
    """Samples a process's resident memory until stopped; `peak` is the largest sample."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = 0
        self.first = self.process.memory_info().rss
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.01)


def test_hostile_json_bodies_are_refused_while_ordinary_submits_go_on(private: Private) -> None:
    assert all(SIZE - 8 <= len(body) <= SIZE for body, _ in HOSTILE.values())
    api = private.deploy({"handler": {"max_concurrency": 4}}).name
    url = private.mesh.http_url
    ordinary: list[tuple[int, float]] = []  # (status, seconds to answer)
    done = threading.Event()

    def trickle() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            n = 0
            while not done.is_set():
                began = time.perf_counter()
                reply = client.post(f"/{api}", json={"n": n})
                ordinary.append((reply.status_code, time.perf_counter() - began))
                n += 1
                time.sleep(TRICKLE_INTERVAL)

    def send(body: bytes) -> httpx.Response:
        with httpx.Client(base_url=url, timeout=120) as client:
            return client.post(f"/{api}", content=body, headers={"Content-Type": "application/json"})

    watch = MemoryWatch(private.mesh.processes["ingest"].pid)
    watch.start()
    ticker = threading.Thread(target=trickle, daemon=True)
    ticker.start()
    began = time.perf_counter()
    with ThreadPoolExecutor(len(HOSTILE)) as pool:
        answers = dict(zip(HOSTILE, pool.map(send, [body for body, _ in HOSTILE.values()]), strict=True))
    took = time.perf_counter() - began
    done.set()
    ticker.join(timeout=60)
    watch.stopping.set()
    watch.join()

    for name, (_, limit) in HOSTILE.items():
        reply = answers[name]
        assert reply.status_code == 400, (name, reply.status_code, reply.text[:300])
        assert reply.json()["message"] == f"body refused: {limit}", name
    assert ordinary and all(status == 200 for status, _ in ordinary), ordinary
    slowest = max(seconds for _, seconds in ordinary)
    assert slowest < STALL, f"an ordinary submit waited {slowest:.2f} s (hostile bodies took {took:.1f} s)"
    print(f"ingest RSS before {watch.first / 2**20:.0f} MiB, peak {watch.peak / 2**20:.0f} MiB")
    assert watch.peak < INGEST_MEMORY_LIMIT, f"ingest reached {watch.peak / 2**20:.0f} MiB"
    print(
        f"{len(HOSTILE)} hostile bodies answered in {took:.1f} s; {len(ordinary)} ordinary submits, slowest "
        f"{slowest * 1000:.0f} ms; ingest peak RSS {watch.peak / 2**20:.0f} MiB"
    )
