"""A request's records as the executor builds them, and the writing of its final one.

The final record is written with compare-and-set and the retention TTL, retried across a NATS fail-over; it
carries its webhook (pending), whose delivery is queued once the record is written. A write the store refuses
(the record was final already: cancelled, or an earlier delivery's) is neither counted nor queued.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext

from cortado import _metrics, _tracing, _webhookjobs, records
from cortado.records import RecordStore
from cortado.v1 import control_pb2, records_pb2
from services.executor.held import Held

log = logging.getLogger(__name__)

RECORD_ATTEMPTS = 5
"""Tries to write a request's outcome (over about 8 s) before it goes back to the queue."""

MAX_ERROR_MESSAGE_CHARS = 64 * 1024
"""Longest error message a record keeps; a longer one keeps its start and says it was cut."""

MAX_TRACEBACK_CHARS = 32 * 1024
"""The longest handler traceback a record keeps (its end is cut beyond)."""

_tracer = _tracing.tracer(__name__)


class FinalWriter:
    """Writes the final records of one API's requests, counts them, and queues their webhooks."""

    def __init__(
        self,
        spec: control_pb2.ApiSpec,
        js: JetStreamContext,
        store: RecordStore,
        on_outcome: Callable[[records_pb2.RequestRecord], None],
    ) -> None:
        self._spec = spec
        self._js = js
        self._store = store
        self._on_outcome = on_outcome
        self._retention = records.retention_seconds(spec)
        self._traced = _tracing.enabled()

    async def write(self, held: Held, final: records_pb2.RequestRecord, revision: int) -> bool:
        """Write final over the record at revision; whether the store answered (False: it could not be written).

        A final record written is counted, passed to on_outcome, and its webhook queued, all before this returns
        (so before the caller acks: should the executor stop first, the redelivery finds the webhook pending).
        A write refused because the record is final already returns True with nothing counted.
        """
        _webhookjobs.mark_pending(final, _webhookjobs.delivery_url(held.item, self._spec))
        written = False
        for attempt in range(RECORD_ATTEMPTS):
            try:
                if self._traced:
                    with (
                        _tracing.attached(_tracing.extract(held.msg.headers)),
                        _tracer.start_as_current_span("result write", attributes={"cortado.request_id": held.item.id}),
                    ):
                        written, _, _ = await self._store.advance(held.item.id, final, revision, self._retention)
                else:
                    written, _, _ = await self._store.advance(held.item.id, final, revision, self._retention)
                break
            except Exception:
                if attempt == RECORD_ATTEMPTS - 1:
                    log.exception(
                        "outcome not recorded; the request goes back to the queue", extra={"id": held.item.id}
                    )
                    return False
                await asyncio.sleep(0.5 * 2**attempt)
        if written:
            count_outcome(self._spec.name, final)
            self._on_outcome(final)
            if self._traced:
                _trace_queue_wait(held, final)
            if final.webhook.url:
                await _webhookjobs.queue_delivery(self._js, self._spec.name, held.item.id)
        return True

    async def requeue_webhook(self, stored: records_pb2.RequestRecord, request_id: str) -> None:
        """Queue again the webhook of a final record still pending delivery (its first queuing may have been lost)."""
        if stored.webhook.url and stored.webhook.state == records_pb2.WEBHOOK_STATE_PENDING:
            await _webhookjobs.queue_delivery(self._js, self._spec.name, request_id)


def base_record(item: records_pb2.WorkItem, attempts: int) -> records_pb2.RequestRecord:
    """The record fields every state of the request repeats from its work item, with attempts."""
    return records_pb2.RequestRecord(
        id=item.id, api=item.api, submitted_at=item.submitted_at, attempts=attempts, priority=item.priority
    )


def failed_record(item: records_pb2.WorkItem, attempts: int, kind: str, message: str) -> records_pb2.RequestRecord:
    """The final record of a request Cortado gives up on: failed now, with error type kind and message."""
    failed = base_record(item, attempts)
    failed.status = records_pb2.REQUEST_STATUS_FAILED
    failed.finished_at.CopyFrom(records.now_timestamp())
    failed.error.type = kind
    failed.error.message = message
    return failed


def conclude(final: records_pb2.RequestRecord, failure: tuple[str, str] | None, traceback: str | None = None) -> None:
    """Set final's status: completed without a failure, else failed with its (type, message) and traceback.

    The message is cut at MAX_ERROR_MESSAGE_CHARS and the traceback (when given) at MAX_TRACEBACK_CHARS.
    """
    if failure is None:
        final.status = records_pb2.REQUEST_STATUS_COMPLETED
        return
    final.status = records_pb2.REQUEST_STATUS_FAILED
    final.error.type, final.error.message = failure[0], cut_message(failure[1])
    if traceback is not None:
        final.error.traceback = cut_message(traceback, MAX_TRACEBACK_CHARS)


def cut_message(message: str, limit: int = MAX_ERROR_MESSAGE_CHARS) -> str:
    """message, or its start and a note saying how long it was when it is over limit characters."""
    if len(message) <= limit:
        return message
    return message[:limit] + f"... (cut: the message was {len(message)} characters)"


def count_outcome(api: str, record: records_pb2.RequestRecord) -> None:
    """Count a request's final record in the built-in _metrics."""
    status = records.STATUS_NAMES.get(record.status, "unknown")
    _metrics.REQUESTS_FINISHED.labels(api, status).inc()
    _metrics.END_TO_END.labels(api).observe(seconds_between(record.submitted_at, record.finished_at))
    if record.status == records_pb2.REQUEST_STATUS_FAILED:
        _metrics.FAILURES.labels(api, record.error.type).inc()


def seconds_between(start: Timestamp, end: Timestamp) -> float:
    """Seconds from start to end; 0 when end is not later."""
    return max(0.0, (end.seconds - start.seconds) + (end.nanos - start.nanos) / 1e9)


def _trace_queue_wait(held: Held, final: records_pb2.RequestRecord) -> None:
    with _tracing.attached(_tracing.extract(held.msg.headers)):
        span = _tracer.start_span(
            "queue wait",
            start_time=_nanos(held.item.submitted_at),
            attributes={"cortado.api": held.item.api, "cortado.request_id": held.item.id},
        )
        span.end(end_time=_nanos(final.started_at))


def _nanos(ts: Timestamp) -> int:
    return ts.seconds * 1_000_000_000 + ts.nanos
