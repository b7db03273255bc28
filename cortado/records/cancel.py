"""Cancelling a request (`DELETE /<api>/<id>`, Requests/Cancel): its final `cancelled` record, written once.

The record is written with compare-and-set against what was read, so it never overwrites a final
record an executor wrote in between (the request then answers as finished), and cancelling twice
finds the `cancelled` record and answers the same. Once it is written:

- the work item is deleted from the API's queue (a request still waiting never reaches a handler);
- the id is announced on `cortado.cancel.<api>`: an executor that holds the request drops it if it has
  not started, or stops its handler if it has (and an announcement it missed is caught when its
  `in_progress` write or its outcome finds the final record);
- a large body's Object Store entry is deleted, the webhook (if any) is queued, the cancel counted.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass
from enum import Enum

from nats.aio.client import Client
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from cortado import _metrics, _names, _webhookjobs
from cortado._mirror import ApiIndex, KvMirror
from cortado.records.locate import queued_at
from cortado.records.states import is_final, now_timestamp, record_ttl, retention_seconds
from cortado.records.store import RecordStore
from cortado.v1 import control_pb2, records_pb2

log = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"[0-9a-f]{32}")

WRITE_ATTEMPTS = 10
"""Compare-and-set rounds before giving up (each lost one means someone else wrote the record meanwhile)."""


class Outcome(Enum):
    """How a cancel ended."""

    CANCELLED = "cancelled"
    """The request is now cancelled (by this call, or an earlier one: cancelling is idempotent)."""
    FINISHED = "finished"
    """The request had finished otherwise (completed or failed): nothing changed."""
    UNKNOWN = "unknown"
    """No such request under this API (or its record expired)."""


@dataclass(frozen=True)
class Cancelled:
    """What a cancel found or made: the outcome and the record as it now stands (None when unknown)."""

    outcome: Outcome
    record: records_pb2.RequestRecord | None


class ApiNotDeployed(LookupError):
    """The API named is not deployed."""


class Canceller:
    """Cancels requests of the deployed APIs."""

    def __init__(
        self, nc: Client, requests: KeyValue, apis: KvMirror[control_pb2.ApiSpec], payloads: ObjectStore
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._records = RecordStore(self._js, requests)
        self._index = ApiIndex(apis)
        self._payloads = payloads

    async def cancel(self, requested: str, request_id: str) -> Cancelled:
        """Cancel the request `request_id` of the API at /<requested>; ApiNotDeployed when there is none."""
        spec = self._index.lookup(requested)
        if spec is None:
            raise ApiNotDeployed(f"API {requested!r} is not deployed")
        if not _REQUEST_ID.fullmatch(request_id):
            return Cancelled(Outcome.UNKNOWN, None)
        for _ in range(WRITE_ATTEMPTS):
            stored, revision = await self._records.read(request_id)
            if stored is not None and stored.api != spec.name:
                return Cancelled(Outcome.UNKNOWN, None)
            if stored is not None and is_final(stored.status):
                cancelled = stored.status == records_pb2.REQUEST_STATUS_CANCELLED
                return Cancelled(Outcome.CANCELLED if cancelled else Outcome.FINISHED, stored)
            found = await queued_at(self._js, spec.name, request_id)
            if stored is None and found is None:
                # Finished (and acknowledged) between the two reads, or unknown.
                stored, revision = await self._records.read(request_id)
                if stored is None or stored.api != spec.name:
                    return Cancelled(Outcome.UNKNOWN, None)
                continue
            item, sequence = found if found is not None else (None, 0)
            record = _cancelled_record(stored, item, spec)
            try:
                await self._records.put_if(request_id, record, revision, record_ttl(retention_seconds(spec)))
            except KeyWrongLastSequenceError:
                continue
            await self._after_cancel(spec.name, record, item, sequence)
            return Cancelled(Outcome.CANCELLED, record)
        raise RuntimeError(f"request {request_id}: too many concurrent writes to cancel it")

    async def _after_cancel(
        self, api: str, record: records_pb2.RequestRecord, item: records_pb2.WorkItem | None, sequence: int
    ) -> None:
        """What follows the cancelled record: the queue, the executors, the body, the webhook, the count."""
        if sequence:
            # Gone already when an executor holds it and acked it meanwhile: nothing to do then.
            with contextlib.suppress(Exception):
                await self._js.delete_msg(_names.work_stream(api), sequence)
        try:
            await self._nc.publish(_names.cancel_subject(api), record.id.encode())
        except Exception as exc:
            # The executor's in_progress write or outcome finds the final record and stops or drops the job.
            log.warning("cancel not announced", extra={"api": api, "id": record.id, "error": repr(exc)})
        if item is not None and item.payload_object:
            with contextlib.suppress(Exception):
                await self._payloads.delete(item.payload_object)
        if record.webhook.url:
            await _webhookjobs.queue_delivery(self._js, api, record.id)
        _metrics.REQUESTS_FINISHED.labels(api, "cancelled").inc()
        log.info("request cancelled", extra={"api": api, "id": record.id})


def _cancelled_record(
    stored: records_pb2.RequestRecord | None, item: records_pb2.WorkItem | None, spec: control_pb2.ApiSpec
) -> records_pb2.RequestRecord:
    """The final record of a cancelled request: what was known of it, `cancelled` now, its webhook pending."""
    record = records_pb2.RequestRecord()
    if stored is not None:
        record.CopyFrom(stored)
    elif item is not None:
        record.id, record.api, record.priority = item.id, item.api, item.priority
        record.submitted_at.CopyFrom(item.submitted_at)
    record.status = records_pb2.REQUEST_STATUS_CANCELLED
    record.finished_at.CopyFrom(now_timestamp())
    _webhookjobs.mark_pending(record, _webhookjobs.delivery_url(item or records_pb2.WorkItem(), spec))
    return record
