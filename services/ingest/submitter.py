"""Accepting a request: validate it, give it an id and enqueue it. No gRPC call objects here."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from dataclasses import dataclass

import grpc
from nats.js import JetStreamContext
from nats.js.errors import APIError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from cortado import _metrics, _names, _nats, _tracing, records
from cortado._mirror import ApiIndex, KvMirror
from cortado.records import now_timestamp
from cortado.runtime import MAX_BODY_BYTES, JsonLimits, PayloadError, check_payload
from cortado.v1 import control_pb2, records_pb2
from services.ingest.queuelimit import QueueFullError, QueueLimits

log = logging.getLogger(__name__)

# JetStream error codes that mean the API's queue is full (discard-new limits).
_QUEUE_FULL_CODES = {10077, 10078}
# JetStream error codes that mean the server's storage itself is full (insufficient resources): no queue is.
_STORE_FULL_CODES = {10023, 10047}
STORE_FULL_RETRY_SECONDS = 5
RETRY_AFTER_SECONDS = 1
MAX_IDEMPOTENCY_KEY = 256
_NO_LIMIT = 2**63
PUBLISH_ATTEMPTS = 3
"""Publishes of one work item whose outcome is unknown (same Nats-Msg-Id) before the submit is refused."""


def body_too_large(size: int) -> str:
    """The refusal of a body over MAX_BODY_BYTES (over HTTP, Envoy refuses it first: 413)."""
    return (
        f"the request body is {size:,} bytes, larger than the {MAX_BODY_BYTES // 2**20} MiB limit "
        f"({MAX_BODY_BYTES:,} bytes); it is refused whatever the retry"
    )


def new_request_id() -> str:
    """An unguessable request id: 128 random bits, hex-encoded."""
    return secrets.token_hex(16)


class Refused(Exception):
    """A request that was not accepted, with the gRPC status and message to answer it with."""

    def __init__(self, code: grpc.StatusCode, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True)
class Options:
    """How a request is to be handled, beyond its body: its priority and its own webhook URL (checked)."""

    priority: int = records_pb2.PRIORITY_NORMAL
    webhook_url: str = ""


DEFAULT_OPTIONS = Options()


@dataclass
class Prepared:
    """A request that passed the checks and has its id; `known` when an earlier submit with its key queued it."""

    api: str
    id: str
    known: bool
    content_type: str = ""
    body: bytes = b""
    options: Options = DEFAULT_OPTIONS


class Submitter:
    """Accepts requests for deployed APIs; a request counts as accepted once JetStream acknowledged it."""

    def __init__(
        self,
        js: JetStreamContext,
        apis: KvMirror[control_pb2.ApiSpec],
        payloads: ObjectStore,
        inline_payload_bytes: int,
        requests: KeyValue,
        idempotency: KeyValue,
        json_limits: JsonLimits | None = None,
    ) -> None:
        self._json_limits = json_limits or JsonLimits()
        self._requests = requests
        self._idempotency = idempotency
        self._js = js
        self._index = ApiIndex(apis)
        self._payloads = payloads
        self._inline_payload_bytes = inline_payload_bytes
        self._queues = QueueLimits(js)

    @property
    def inline_payload_bytes(self) -> int:
        """Bodies larger than this go to the payloads Object Store; the work item names them."""
        return self._inline_payload_bytes

    async def submit(
        self, api: str, content_type: str, body: bytes, key: str | None, options: Options = DEFAULT_OPTIONS
    ) -> Prepared:
        """prepare() then enqueue(): the accepted request (Refused says why not)."""
        prepared = await self.prepare(api, content_type, body, key, options)
        if not prepared.known:
            await self.enqueue(prepared)
        return prepared

    async def prepare(
        self, requested: str, content_type: str, body: bytes, key: str | None, options: Options = DEFAULT_OPTIONS
    ) -> Prepared:
        """Check the API and the body, and assign the id (the one claimed for key, when given)."""
        spec = self._index.lookup(requested)
        if spec is None:
            raise Refused(grpc.StatusCode.NOT_FOUND, f"API {requested!r} is not deployed")
        api = str(spec.name)
        if len(body) > MAX_BODY_BYTES:
            _metrics.REQUESTS_REJECTED.labels(api, "too_large").inc()
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, body_too_large(len(body)))
        try:
            # A piece at a time, building nothing: a large or hostile body neither holds the loop nor grows memory.
            await check_payload(content_type, body, self._json_limits)
        except PayloadError as exc:
            _metrics.REQUESTS_REJECTED.labels(api, "invalid_payload").inc()
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        request_id = new_request_id()
        known = False
        if key is not None:
            if len(key) > MAX_IDEMPOTENCY_KEY:
                raise Refused(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"the Idempotency-Key is {len(key)} characters long; at most {MAX_IDEMPOTENCY_KEY} are allowed",
                )
            request_id, known = await self._claim(api, key, request_id)
        return Prepared(api, request_id, known, content_type, body, options)

    async def enqueue(self, prepared: Prepared) -> None:
        """Put the request on its API's work stream; until a handler takes it, the queue is its only record."""
        api, request_id, body = prepared.api, prepared.id, prepared.body
        item = records_pb2.WorkItem(
            id=request_id,
            api=api,
            content_type=prepared.content_type,
            submitted_at=now_timestamp(),
            priority=prepared.options.priority,  # type: ignore[arg-type]
            webhook_url=prepared.options.webhook_url,
        )
        spec = self._index.lookup(api)
        # queue.max_length counts the requests waiting undelivered (services/ingest/queuelimit.py).
        max_length = int(spec.queue_max_length) if spec is not None and spec.queue_max_length else _NO_LIMIT
        try:
            async with self._queues.admitted(api, max_length) as queued:
                if len(body) > self._inline_payload_bytes:
                    await self._payloads.put(request_id, body)
                    item.payload_object = request_id
                else:
                    item.payload = body
                try:
                    await self._publish(item)
                except Exception as exc:
                    # Nothing was queued: take back the body stored beside it, so a refusal changes nothing.
                    if item.payload_object:
                        with contextlib.suppress(Exception):
                            await self._payloads.delete(request_id)
                    raise self._refusal(api, exc) from exc
                queued()
        except QueueFullError as exc:
            _metrics.REQUESTS_REJECTED.labels(api, "queue_full").inc()
            raise Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{exc}; retry after {RETRY_AFTER_SECONDS}s",
                retry_after=RETRY_AFTER_SECONDS,
            ) from None
        _metrics.REQUESTS_SUBMITTED.labels(api).inc()

    async def _publish(self, item: records_pb2.WorkItem) -> None:
        """Publish the work item; raises only when it is certainly not queued.

        JetStream's refusal (a full queue, say) is certain. A publish that got no answer (a timeout, a lost
        connection) may have been stored: it is sent again under the same `Nats-Msg-Id`, which JetStream
        stores at most once, and a last failure counts only when the queue does not hold the request.
        """
        subject, stream = _names.work_subject(item.api, item.id, item.priority), _names.work_stream(item.api)
        data = item.SerializeToString()
        headers = _tracing.inject_headers({"Nats-Msg-Id": item.id})
        for attempt in range(PUBLISH_ATTEMPTS):
            try:
                await self._js.publish(subject, data, stream=stream, headers=headers)
                return
            except APIError:
                raise
            except Exception:
                if attempt == PUBLISH_ATTEMPTS - 1:
                    if await self._landed(item.api, item.id):
                        return
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))

    async def _landed(self, api: str, request_id: str) -> bool:
        """Whether the request is queued (or already taken), after a publish whose outcome is unknown."""
        try:
            return await records.current(self._js, self._requests, api, request_id) is not None
        except Exception:
            return False

    async def _claim(self, api: str, key: str, request_id: str) -> tuple[str, bool]:
        """The id a submit with this Idempotency-Key gets, and whether that request already exists.

        The first submit with a key claims it for its new id; a retry gets that id back and
        enqueues nothing, unless the first submit died before recording its request.
        """
        slot = hashlib.sha256(f"{api}\0{key}".encode()).hexdigest()
        try:
            await _nats.kv_put_if(self._js, _names.IDEMPOTENCY_BUCKET, slot, request_id.encode(), last=0)
            return request_id, False
        except KeyWrongLastSequenceError:
            pass
        entry = await self._idempotency.get(slot)
        claimed = (entry.value or b"").decode() or request_id
        if await records.current(self._js, self._requests, api, claimed) is None:
            # The first submit stopped before its request was queued: enqueue it now, under the same id
            # (Nats-Msg-Id deduplicates the work item if the first publish did land).
            return claimed, False
        return claimed, True

    @staticmethod
    def _refusal(api: str, exc: BaseException) -> Refused:
        if isinstance(exc, APIError) and exc.err_code in _QUEUE_FULL_CODES:
            _metrics.REQUESTS_REJECTED.labels(api, "queue_full").inc()
            return Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the queue of API {api!r} is full; retry after {RETRY_AFTER_SECONDS}s",
                retry_after=RETRY_AFTER_SECONDS,
            )
        if isinstance(exc, APIError) and exc.err_code in _STORE_FULL_CODES:
            _metrics.REQUESTS_REJECTED.labels(api, "store_full").inc()
            log.error("the store is full; submits are refused", extra={"api": api, "error": exc.description})
            return Refused(
                grpc.StatusCode.UNAVAILABLE,
                f"Cortado's store is full, so the request was not queued; retry after {STORE_FULL_RETRY_SECONDS}s",
                retry_after=STORE_FULL_RETRY_SECONDS,
            )
        log.error("enqueue failed", extra={"api": api, "error": repr(exc)})
        return Refused(grpc.StatusCode.UNAVAILABLE, "the request could not be queued; it is safe to retry")
