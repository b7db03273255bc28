"""Results too large for their record: kept in the results Object Store, read back in bounded chunks, swept.

The executor puts a large result under the request id, with headers naming its API and when it expires (its
record's retention); the results service streams it back a few chunks at a time, so a 1 GiB result never sits in
memory; the scheduler deletes entries past their expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, ObjectInfo, ObjectMeta
from nats.js.errors import NotFoundError
from nats.js.object_store import OBJ_CHUNKS_PRE_TEMPLATE, OBJ_STREAM_TEMPLATE, ObjectStore

from cortado import _names, _nats

log = logging.getLogger(__name__)

API_HEADER = "Cortado-Api"
EXPIRES_HEADER = "Cortado-Expires"
"""Object headers: the API a result belongs to, and when it expires (Unix seconds)."""

SWEEP_SECONDS = 300.0
"""How often the leading scheduler deletes expired results."""

FETCH_CHUNKS = 8
"""Object Store chunks (128 KiB each) fetched at a time while a result is read."""


class ResultDataLossError(Exception):
    """A stored result's bytes are missing or no longer match the SHA-256 its record _names."""


async def results_store(js: JetStreamContext) -> ObjectStore:
    """The results Object Store (created on first use, with its byte limit)."""
    return await _nats.object_store(js, _names.RESULTS_STORE)


async def put_result(store: ObjectStore, request_id: str, api: str, path: Path, expires_at: float) -> ObjectInfo:
    """Store the file at path as the request's result, to be swept after expires_at (Unix seconds).

    The library reads the file a chunk at a time in a thread; a second put under the same id (a redelivered
    request) replaces the first.
    """
    meta = ObjectMeta(name=request_id, headers={API_HEADER: [api], EXPIRES_HEADER: [str(int(expires_at))]})
    with path.open("rb") as file:
        return await store.put(request_id, file, meta=meta)


async def read_result(js: JetStreamContext, store: ObjectStore, name: str, sha256: str) -> AsyncIterator[bytes]:
    """The stored result's bytes in order, FETCH_CHUNKS chunks in memory at most.

    Raises ResultDataLossError (after yielding what matched) when the bytes are missing, fewer, or do not hash to
    sha256 (hex).
    """
    try:
        info = await store.get_info(name)
    except NotFoundError:
        raise ResultDataLossError(f"the stored result {name!r} is missing") from None
    digest = hashlib.sha256()
    received = chunks = 0
    if info.size:
        bucket = info.bucket
        subject = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=bucket, obj=info.nuid)
        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=60.0, mem_storage=True
        )
        subscription = await js.pull_subscribe(subject, stream=OBJ_STREAM_TEMPLATE.format(bucket=bucket), config=config)
        try:
            while received < info.size:
                try:
                    messages = await subscription.fetch(
                        max(1, min(FETCH_CHUNKS, (info.chunks or 1) - chunks)), timeout=10
                    )
                except TimeoutError:
                    break
                for message in messages:
                    chunks += 1
                    digest.update(message.data)
                    received += len(message.data)
                    yield message.data
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
    if received != info.size or digest.hexdigest() != sha256:
        raise ResultDataLossError(f"the stored result {name!r} does not match its SHA-256")


def expiry(info: ObjectInfo) -> float | None:
    """When a stored result expires (Unix seconds), from its header; None when it has none."""
    values = (info.headers or {}).get(EXPIRES_HEADER) or []
    with contextlib.suppress(ValueError, IndexError, TypeError):
        return float(values[0])
    return None


async def sweep(store: ObjectStore, now: float | None = None) -> int:
    """Delete the stored results whose expiry has passed; how many were deleted."""
    now = time.time() if now is None else now
    try:
        entries = await store.list(ignore_deletes=True)
    except NotFoundError:
        return 0
    deleted = 0
    for info in entries:
        expires = expiry(info)
        if expires is not None and expires <= now:
            try:
                await store.delete(info.name)
                deleted += 1
            except NotFoundError:
                pass
    return deleted


async def sweep_while_leading(store: ObjectStore, leading: asyncio.Event, interval: float = SWEEP_SECONDS) -> None:
    """Sweep every interval seconds while leading is set (this scheduler holds the lease), until cancelled."""
    while True:
        await asyncio.sleep(interval)
        await leading.wait()
        try:
            deleted = await sweep(store)
        except Exception as exc:
            log.warning("expired results not swept", extra={"error": repr(exc)})
            continue
        if deleted:
            log.info("expired results deleted", extra={"count": deleted})
