"""The Submission gRPC service: validate, assign an id, record it and enqueue it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets

import grpc
from nats.js import JetStreamContext
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from cortado import metrics, names, natsutil, tracing
from cortado.mirror import ApiIndex, KvMirror
from cortado.records import now_timestamp
from cortado.runtime import PayloadError, validate_payload
from cortado.service import abort
from cortado.v1 import control_pb2, public_pb2, public_pb2_grpc, records_pb2

log = logging.getLogger(__name__)

# JetStream error codes that mean the API's queue is full (discard-new limits).
_QUEUE_FULL_CODES = {10077, 10047, 10078}
RETRY_AFTER_SECONDS = 1


def new_request_id() -> str:
    """An unguessable request id: 128 random bits, hex-encoded."""
    return secrets.token_hex(16)


MAX_IDEMPOTENCY_KEY = 256
IDEMPOTENCY_HEADER = "idempotency-key"


def _idempotency_key(context: grpc.aio.ServicerContext) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == IDEMPOTENCY_HEADER:
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return None


class SubmissionServicer(public_pb2_grpc.SubmissionServicer):
    """Accepts requests for deployed APIs; answers only once they are durably queued."""

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
        self._apis = apis
        self._index = ApiIndex(apis)
        self._payloads = payloads
        self._inline_payload_bytes = inline_payload_bytes

    async def Submit(
        self, request: public_pb2.SubmitRequest, context: grpc.aio.ServicerContext
    ) -> public_pb2.SubmitResponse:
        spec = self._index.lookup(request.api)
        if spec is None:
            await abort(context, grpc.StatusCode.NOT_FOUND, f"API {request.api!r} is not deployed")
        api = spec.name
        content_type = request.body.content_type
        body = request.body.data
        try:
            validate_payload(content_type, body)
        except PayloadError as exc:
            metrics.REQUESTS_REJECTED.labels(api, "invalid_payload").inc()
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))

        request_id = new_request_id()
        key = _idempotency_key(context)
        if key is not None:
            if len(key) > MAX_IDEMPOTENCY_KEY:
                await abort(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"the Idempotency-Key header is {len(key)} characters long; "
                    f"at most {MAX_IDEMPOTENCY_KEY} are allowed",
                )
            request_id, known = await self._claim(api, key, request_id)
            if known:
                return public_pb2.SubmitResponse(id=request_id)
        submitted_at = now_timestamp()
        item = records_pb2.WorkItem(id=request_id, api=api, content_type=content_type, submitted_at=submitted_at)
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
            await self._abort_enqueue(context, api, enqueue)
        metrics.REQUESTS_SUBMITTED.labels(api).inc()
        # A handler may already have written a newer state: then the record exists and is newer.
        if isinstance(created, BaseException) and not isinstance(created, KeyWrongLastSequenceError):
            log.warning("in_queue record not written", extra={"id": request_id, "error": repr(created)})
        return public_pb2.SubmitResponse(id=request_id)

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

    async def _abort_enqueue(self, context: grpc.aio.ServicerContext, api: str, exc: BaseException) -> None:
        if isinstance(exc, APIError) and exc.err_code in _QUEUE_FULL_CODES:
            metrics.REQUESTS_REJECTED.labels(api, "queue_full").inc()
            await context.send_initial_metadata((("retry-after", str(RETRY_AFTER_SECONDS)),))
            await abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the queue of API {api!r} is full; retry after {RETRY_AFTER_SECONDS}s",
            )
        log.error("enqueue failed", extra={"api": api, "error": repr(exc)})
        await abort(context, grpc.StatusCode.UNAVAILABLE, "the request could not be queued; it is safe to retry")
