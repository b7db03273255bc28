"""Accepting a request: validate it, give it an id, record it and enqueue it. No gRPC call objects here."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from dataclasses import dataclass

import grpc
from nats.js import JetStreamContext
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from cortado import metrics, names, natsutil, tracing
from cortado.mirror import ApiIndex, KvMirror
from cortado.records import now_timestamp
from cortado.runtime import PayloadError, validate_payload
from cortado.v1 import control_pb2, records_pb2

log = logging.getLogger(__name__)

# JetStream error codes that mean the API's queue is full (discard-new limits).
_QUEUE_FULL_CODES = {10077, 10047, 10078}
RETRY_AFTER_SECONDS = 1
MAX_IDEMPOTENCY_KEY = 256


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


@dataclass
class Prepared:
    """A request that passed the checks and has its id; `known` when an earlier submit with its key queued it."""

    api: str
    id: str
    known: bool
    content_type: str = ""
    body: bytes = b""


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
    ) -> None:
        self._requests = requests
        self._idempotency = idempotency
        self._js = js
        self._index = ApiIndex(apis)
        self._payloads = payloads
        self._inline_payload_bytes = inline_payload_bytes

    @property
    def inline_payload_bytes(self) -> int:
        """Bodies larger than this go to the payloads Object Store; the work item names them."""
        return self._inline_payload_bytes

    async def submit(self, api: str, content_type: str, body: bytes, key: str | None) -> Prepared:
        """prepare() then enqueue(): the accepted request (Refused says why not)."""
        prepared = await self.prepare(api, content_type, body, key)
        if not prepared.known:
            await self.enqueue(prepared)
        return prepared

    async def prepare(self, requested: str, content_type: str, body: bytes, key: str | None) -> Prepared:
        """Check the API and the body, and assign the id (the one claimed for key, when given)."""
        spec = self._index.lookup(requested)
        if spec is None:
            raise Refused(grpc.StatusCode.NOT_FOUND, f"API {requested!r} is not deployed")
        api = str(spec.name)
        try:
            validate_payload(content_type, body)
        except PayloadError as exc:
            metrics.REQUESTS_REJECTED.labels(api, "invalid_payload").inc()
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
        return Prepared(api, request_id, known, content_type, body)

    async def enqueue(self, prepared: Prepared) -> None:
        """Record the request in_queue and put it on its API's work stream, both at once."""
        api, request_id, body = prepared.api, prepared.id, prepared.body
        submitted_at = now_timestamp()
        item = records_pb2.WorkItem(
            id=request_id, api=api, content_type=prepared.content_type, submitted_at=submitted_at
        )
        if len(body) > self._inline_payload_bytes:
            await self._payloads.put(request_id, body)
            item.payload_object = request_id
        else:
            item.payload = body
        record = records_pb2.RequestRecord(
            id=request_id, api=api, status=records_pb2.REQUEST_STATUS_IN_QUEUE, submitted_at=submitted_at
        )
        # Both writes go out together: one round trip, not two.
        enqueue, created = await asyncio.gather(
            self._js.publish(
                names.work_subject(api),
                item.SerializeToString(),
                stream=names.work_stream(api),
                headers=tracing.inject_headers({"Nats-Msg-Id": request_id}),
            ),
            natsutil.kv_put_if(self._js, names.REQUESTS_BUCKET, request_id, record.SerializeToString(), last=0),
            return_exceptions=True,
        )
        if isinstance(enqueue, BaseException):
            # Nothing was queued: take back the record (and body) written beside it, so a refusal changes nothing.
            with contextlib.suppress(Exception):
                await self._requests.purge(request_id)
            if item.payload_object:
                with contextlib.suppress(Exception):
                    await self._payloads.delete(request_id)
            raise self._refusal(api, enqueue)
        metrics.REQUESTS_SUBMITTED.labels(api).inc()
        # A handler may already have written a newer state: then the record exists and is newer.
        if isinstance(created, BaseException) and not isinstance(created, KeyWrongLastSequenceError):
            log.warning("in_queue record not written", extra={"id": request_id, "error": repr(created)})

    async def _claim(self, api: str, key: str, request_id: str) -> tuple[str, bool]:
        """The id a submit with this Idempotency-Key gets, and whether that request already exists.

        The first submit with a key claims it for its new id; a retry gets that id back and
        enqueues nothing, unless the first submit died before recording its request.
        """
        slot = hashlib.sha256(f"{api}\0{key}".encode()).hexdigest()
        try:
            await natsutil.kv_put_if(self._js, names.IDEMPOTENCY_BUCKET, slot, request_id.encode(), last=0)
            return request_id, False
        except KeyWrongLastSequenceError:
            pass
        entry = await self._idempotency.get(slot)
        claimed = (entry.value or b"").decode() or request_id
        try:
            await self._requests.get(claimed)
        except KeyNotFoundError:
            # The first submit stopped before its request was recorded: enqueue it now, under the same id
            # (Nats-Msg-Id deduplicates the work item if the first publish did land).
            return claimed, False
        return claimed, True

    @staticmethod
    def _refusal(api: str, exc: BaseException) -> Refused:
        if isinstance(exc, APIError) and exc.err_code in _QUEUE_FULL_CODES:
            metrics.REQUESTS_REJECTED.labels(api, "queue_full").inc()
            return Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the queue of API {api!r} is full; retry after {RETRY_AFTER_SECONDS}s",
                retry_after=RETRY_AFTER_SECONDS,
            )
        log.error("enqueue failed", extra={"api": api, "error": repr(exc)})
        return Refused(grpc.StatusCode.UNAVAILABLE, "the request could not be queued; it is safe to retry")
