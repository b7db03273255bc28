"""KvMirror against a real nats-server: it loads a bucket's keys, follows puts and deletes, and stops cleanly."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.js.kv import KeyValue

from cortado import _nats, _natsauth
from cortado._mirror import KvMirror
from cortado.mesh import ManagedProcess, find_binary, free_port, nats_config, tcp_open, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    """A nats-server with JetStream whose one user is the admin; its URL with that user's password."""
    port = free_port()
    credentials = _natsauth.generate(tmp_path / "credentials", [_natsauth.ADMIN])
    config = tmp_path / "nats.conf"
    config.write_text(nats_config(port, tmp_path / "jetstream", credentials=credentials))
    process = ManagedProcess(
        "nats", [find_binary("nats-server"), "-c", str(config)], dict(os.environ), tmp_path / "n.log"
    )
    process.start()
    try:
        wait_until(lambda: tcp_open(port), 30, "nats-server")
        admin = credentials[_natsauth.ADMIN]
        yield f"nats://{admin.user}:{admin.password}@127.0.0.1:{port}"
    finally:
        process.stop()


@pytest.fixture
async def bucket(nats_url: str) -> AsyncIterator[KeyValue]:
    nc = await nats.connect(nats_url)
    try:
        yield await _nats.key_value(nc.jetstream(), "mirrored", history=1)
    finally:
        await nc.close()


async def test_a_mirror_loads_the_bucket_then_follows_puts_and_deletes(bucket: KeyValue) -> None:
    await bucket.put("a", b"1")
    await bucket.put("b", b"2")
    await bucket.put("empty", b"")
    changes: list[tuple[str, int | None]] = []
    mirror = KvMirror(bucket, lambda data: int(data), on_change=lambda key, value: changes.append((key, value)))
    await mirror.start()
    try:
        # What was there when it started is there at once (an empty value reads as no value).
        assert sorted(mirror.items()) == [("a", 1), ("b", 2)]
        await bucket.put("c", b"3")
        await bucket.put("a", b"10")
        await bucket.delete("b")
        assert await mirror.wait_for("b", lambda value: value is None)
        assert await mirror.wait_for("c", lambda value: value == 3)
        assert sorted(mirror.items()) == [("a", 10), ("c", 3)]
        assert ("b", None) in changes and ("c", 3) in changes
    finally:
        await mirror.stop()
    # Stopped: it follows nothing more.
    await bucket.put("d", b"4")
    assert mirror.get("d") is None


async def test_an_undecodable_value_is_skipped_and_the_mirror_goes_on(bucket: KeyValue) -> None:
    mirror = KvMirror(bucket, lambda data: int(data))
    await mirror.start()
    try:
        await bucket.put("bad", b"not a number")
        await bucket.put("good", b"7")
        assert await mirror.wait_for("good", lambda value: value == 7)
        assert mirror.get("bad") is None
    finally:
        await mirror.stop()
