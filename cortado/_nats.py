"""Connecting to NATS and creating the buckets and object stores the mesh shares."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, ObjectStoreConfig, StorageType, StreamConfig
from nats.js.errors import (
    APIError,
    BucketNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
    ServiceUnavailableError,
)
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from cortado import _names
from cortado._env import Env
from cortado._mirror import KvMirror
from cortado._natsauth import NatsCredentials
from cortado.v1 import control_pb2

log = logging.getLogger(__name__)

T = TypeVar("T")

EXECUTOR_HEARTBEAT_TTL = 15.0
"""Seconds an executor stays in the pool after its last heartbeat."""


async def connect(url: str, name: str, timeout: float = 60.0, credentials: NatsCredentials | None = None) -> Client:
    """Connect to NATS, retrying for up to timeout seconds, and reconnecting forever afterwards.

    Authenticates as credentials, else as the user the environment names (`natsauth.NatsCredentials.from_env`),
    else with whatever the URL carries.
    """
    creds = credentials or NatsCredentials.from_env()
    auth: dict[str, Any] = {"user": creds.user, "password": creds.password} if creds else {}

    async def _error(exc: Exception) -> None:
        log.warning("nats error", extra={"error": str(exc)})

    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await nats.connect(
                servers=url.split(","),
                name=name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                connect_timeout=2,
                allow_reconnect=True,
                error_cb=_error,
                pending_size=64 * 1024 * 1024,
                **auth,
            )
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("NATS is not reachable yet; retrying", extra={"url": url})
            await asyncio.sleep(0.5)


async def drain(nc: Client, timeout: float = 5.0) -> None:
    """Drain the connection, bounded: a drain can hang after heavy work."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.drain(), timeout=timeout)
    if not nc.is_closed:
        with contextlib.suppress(Exception):
            await nc.close()


_replicas = 1


def set_replicas(replicas: int) -> None:
    """How many NATS servers keep a copy of each stream and bucket this process creates (1, 3 or 5)."""
    global _replicas
    _replicas = replicas


def replicas() -> int:
    """The replication factor streams and buckets are created with (CORTADO_NATS_REPLICAS)."""
    return _replicas


async def while_jetstream_starts(what: str, attempt: Callable[[], Awaitable[T]], timeout: float = 60.0) -> T:
    """attempt()'s result, retried every 0.5 s for up to timeout seconds while JetStream does not answer yet.

    A JetStream cluster answers nothing until it has elected its leaders: retry rather than fail at start.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await attempt()
        except (nats.errors.TimeoutError, ServiceUnavailableError, nats.errors.NoRespondersError) as exc:
            if loop.time() > deadline:
                raise
            log.warning("JetStream not ready; retrying", extra={"what": what, "error": repr(exc)})
            await asyncio.sleep(0.5)


GIB = 1024**3

STORE_LIMITS: dict[str, tuple[str, int]] = {
    _names.REQUESTS_BUCKET: ("REQUESTS_MAX_BYTES", 2 * GIB),
    _names.PAYLOADS_STORE: ("PAYLOADS_MAX_BYTES", 4 * GIB),
    _names.RESULTS_STORE: ("RESULTS_MAX_BYTES", 4 * GIB),
    _names.BUNDLES_STORE: ("BUNDLES_MAX_BYTES", GIB),
    _names.IDEMPOTENCY_BUCKET: ("IDEMPOTENCY_MAX_BYTES", GIB // 4),
}
"""Bucket or object store -> (setting, default): the bytes it may hold. A write past the limit is refused (a full
store never evicts a record); the other buckets hold one small entry per API, executor or lease and get 64 MiB.
JetStream reserves every limit from its storage (`max_file_store`) when the bucket is created: with the logs
and dead-letter streams (1 GiB each) the defaults reserve about 13.5 GiB, plus each API's queue."""

SMALL_BUCKET_BYTES = 64 * 1024**2

QUEUE_MAX_BYTES = GIB // 4
"""Default byte limit of one API's work stream (`CORTADO_QUEUE_MAX_BYTES`): bodies inline up to 512 KiB, larger
ones count in the payloads store."""


def queue_max_bytes(env: Env | None = None) -> int:
    """The byte limit an API's work stream is created (or updated) with."""
    return (env or Env()).integer("QUEUE_MAX_BYTES", QUEUE_MAX_BYTES, minimum=1024)


def max_bytes(bucket: str, env: Env | None = None) -> int:
    """The byte limit bucket is created with: its `CORTADO_*_MAX_BYTES` setting, or the default."""
    setting, default = STORE_LIMITS.get(bucket, ("", SMALL_BUCKET_BYTES))
    return (env or Env()).integer(setting, default, minimum=1024) if setting else default


async def key_value(js: JetStreamContext, bucket: str, **config: Any) -> KeyValue:
    """The KV bucket, created (file storage, replicated, with its byte limit) if it does not exist yet."""

    async def attempt() -> KeyValue:
        try:
            return await js.key_value(bucket)
        except BucketNotFoundError:
            return await js.create_key_value(
                KeyValueConfig(
                    bucket=bucket, storage=StorageType.FILE, replicas=_replicas, max_bytes=max_bytes(bucket), **config
                )
            )

    return await while_jetstream_starts(bucket, attempt)


async def object_store(js: JetStreamContext, bucket: str) -> ObjectStore:
    """The Object Store bucket, created (file storage, replicated, with its byte limit) if it does not exist yet."""

    async def attempt() -> ObjectStore:
        try:
            return await js.object_store(bucket)
        except BucketNotFoundError:
            config = ObjectStoreConfig(storage=StorageType.FILE, replicas=_replicas, max_bytes=max_bytes(bucket))
            return await js.create_object_store(bucket, config)

    return await while_jetstream_starts(bucket, attempt)


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream if it does not exist yet (an existing one keeps its configuration)."""
    try:
        await js.stream_info(config.name or "")
    except NotFoundError:
        await js.add_stream(config)


def client_of(js: JetStreamContext) -> Client:
    """The NATS connection a JetStream context runs on, for core subscriptions beside it.

    nats-py keeps it private (`JetStreamContext._nc`) and offers no accessor: this is the one place Cortado reads
    it, so that a change in nats-py breaks here alone.
    """
    nc: Client = js._nc
    return nc


async def requests_bucket(js: JetStreamContext) -> KeyValue:
    """The request-state bucket: one revision per key, per-message TTL for retention."""
    return await key_value(js, _names.REQUESTS_BUCKET, history=1)


async def apis_bucket(js: JetStreamContext) -> KeyValue:
    """The API registry bucket."""
    return await key_value(js, _names.APIS_BUCKET, history=1)


async def executors_bucket(js: JetStreamContext) -> KeyValue:
    """The executor heartbeat bucket: an executor that stops beating disappears."""
    return await key_value(js, _names.EXECUTORS_BUCKET, history=1, ttl=EXECUTOR_HEARTBEAT_TTL)


IDEMPOTENCY_TTL = 24 * 3600.0
"""How long an Idempotency-Key keeps answering with the same request id."""


async def idempotency_bucket(js: JetStreamContext) -> KeyValue:
    """Idempotency-Key → request id, kept for a day."""
    return await key_value(js, _names.IDEMPOTENCY_BUCKET, history=1, ttl=IDEMPOTENCY_TTL)


async def placements_bucket(js: JetStreamContext) -> KeyValue:
    """The placements bucket, written by the scheduler and watched by executors."""
    return await key_value(js, _names.PLACEMENTS_BUCKET, history=1)


_WRONG_LAST_SEQUENCE = (10071, 10164)


async def kv_put_if(
    js: JetStreamContext, bucket: str, key: str, value: bytes, last: int, msg_ttl: float | None = None
) -> int:
    """Write key only if its latest revision is last (0: only if absent), optionally expiring after msg_ttl seconds.

    Returns the new revision; raises KeyWrongLastSequenceError when another write came first.
    """
    try:
        ack = await js.publish(
            f"$KV.{bucket}.{key}",
            value,
            headers={"Nats-Expected-Last-Subject-Sequence": str(last)},
            msg_ttl=msg_ttl,
        )
    except APIError as err:
        if err.err_code in _WRONG_LAST_SEQUENCE:
            raise KeyWrongLastSequenceError(description=err.description) from err
        raise
    return int(ack.seq)


async def api_registry(js: JetStreamContext) -> KvMirror[control_pb2.ApiSpec]:
    """A live mirror of the deployed APIs (the apis bucket), to start (`ServiceRunner.enter`)."""
    return KvMirror(await apis_bucket(js), control_pb2.ApiSpec.FromString)
