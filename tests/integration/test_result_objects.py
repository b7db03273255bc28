"""The results Object Store against the mesh's nats-server: stored results read back in bounded chunks, with
their SHA-256 checked, and swept once expired."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import nats
import pytest

from cortado import _resultobjects
from cortado.mesh import LocalMesh
from tests.helpers import unique_name

pytestmark = pytest.mark.integration


async def test_a_stored_result_reads_back_whole_and_a_wrong_digest_is_data_loss(
    mesh: LocalMesh, tmp_path: Path
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    path = tmp_path / "result"
    path.write_bytes(data)
    nc = await nats.connect(mesh.admin_nats_url)
    try:
        js = nc.jetstream()
        store = await _resultobjects.results_store(js)
        name = unique_name("r")
        await _resultobjects.put_result(store, name, "api", path, time.time() + 60)
        sha = hashlib.sha256(data).hexdigest()
        pieces = [piece async for piece in _resultobjects.read_result(js, store, name, sha)]
        assert b"".join(pieces) == data
        assert max(len(p) for p in pieces) <= 128 * 1024  # one Object Store chunk at a time
        with pytest.raises(_resultobjects.ResultDataLossError, match="does not match its SHA-256"):
            _ = [piece async for piece in _resultobjects.read_result(js, store, name, "0" * 64)]
        with pytest.raises(_resultobjects.ResultDataLossError, match="is missing"):
            _ = [piece async for piece in _resultobjects.read_result(js, store, unique_name("gone"), sha)]
    finally:
        await nc.close()


async def test_sweep_deletes_only_expired_results(mesh: LocalMesh, tmp_path: Path) -> None:
    path = tmp_path / "result"
    path.write_bytes(b"x" * 1000)
    nc = await nats.connect(mesh.admin_nats_url)
    try:
        store = await _resultobjects.results_store(nc.jetstream())
        expired, kept = unique_name("old"), unique_name("new")
        now = time.time()
        await _resultobjects.put_result(store, expired, "api", path, now - 1)
        await _resultobjects.put_result(store, kept, "api", path, now + 3600)
        assert _resultobjects.expiry(await store.get_info(kept)) == int(now + 3600)
        assert await _resultobjects.sweep(store, now) >= 1
        names = {info.name for info in await store.list(ignore_deletes=True)}
        assert kept in names and expired not in names
    finally:
        await nc.close()
