"""An API's most recent requests, for the console (Scheduler/ListRequests).

Requests live in two places: a queued request is only its work item on the API's stream (ingest writes no record
for it), and every other one is its record in the requests bucket, keyed by id alone. So the list is made of:

- the newest work items of the API's stream that have no record yet (they wait), read newest first;
- the records the bucket changed last, read newest first in chunks, keeping the API's (the bucket holds every
  API's, one revision per key) until `limit` are found or `MAX_SCANNED` were read.

Nothing is indexed ahead of time, so the cost falls on the console's reader only, and grows with how busy the
mesh is rather than with how long records are kept; `truncated` says when the search stopped short.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from cortado import _names, records
from cortado.v1 import control_pb2, records_pb2

DEFAULT_LIMIT = 50
MAX_LIMIT = 500

CHUNK = 2000
"""Records read per step back through the bucket."""

MAX_SCANNED = 50_000
"""Most records one listing reads before it answers with what it found."""

QUEUED_READS = 1000
"""Most work items one listing reads from the API's stream."""

READ_TIMEOUT_SECONDS = 2.0

STATUS_FILTERS: dict[str, int] = {
    name: status for status, name in records.STATUS_NAMES.items() if status != records_pb2.REQUEST_STATUS_NOT_FOUND
}
"""The `status` values ListRequests takes: in_queue, in_progress, completed, failed, cancelled."""


class BadFilterError(ValueError):
    """The status filter names no request state."""


@dataclass(frozen=True)
class Listing:
    """What a listing found: the summaries (newest submission first), records read, and whether it stopped short."""

    requests: list[control_pb2.RequestSummary]
    scanned: int
    truncated: bool


def summary(record: records_pb2.RequestRecord) -> control_pb2.RequestSummary:
    """One line of the list: a record's state, priority, attempts, phase times and error type."""
    line = control_pb2.RequestSummary(
        id=record.id,
        status=record.status,
        priority=record.priority or records_pb2.PRIORITY_NORMAL,
        attempts=record.attempts,
        error_type=record.error.type,
    )
    for name in ("submitted_at", "started_at", "finished_at"):
        if record.HasField(name):
            getattr(line, name).CopyFrom(getattr(record, name))
    return line


def parse_filter(status: str) -> int | None:
    """The RequestStatus a `status` filter names (None for every state); BadFilterError for an unknown one."""
    if not status:
        return None
    try:
        return STATUS_FILTERS[status.strip().lower()]
    except KeyError:
        raise BadFilterError(
            f"status {status!r} is not a request state; use one of {', '.join(STATUS_FILTERS)}, or none for all"
        ) from None


async def list_requests(
    js: JetStreamContext, requests: KeyValue, api: str, status: int | None, limit: int, max_scanned: int = MAX_SCANNED
) -> Listing:
    """The API's most recent requests in `status` (None: any), newest submission first, at most `limit`."""
    limit = min(max(limit or DEFAULT_LIMIT, 1), MAX_LIMIT)
    found: dict[str, records_pb2.RequestRecord] = {}
    scanned, truncated = 0, False
    if status is None or status == records_pb2.REQUEST_STATUS_IN_QUEUE:
        for record in await _queued(js, requests, api, limit):
            found[record.id] = record
    if status != records_pb2.REQUEST_STATUS_IN_QUEUE:
        scanned, truncated = await _scan_records(js, api, status, limit, max_scanned, found)
    ordered = sorted(found.values(), key=lambda r: (r.submitted_at.seconds, r.submitted_at.nanos), reverse=True)
    return Listing([summary(r) for r in ordered[:limit]], scanned, truncated)


async def _queued(js: JetStreamContext, requests: KeyValue, api: str, limit: int) -> list[records_pb2.RequestRecord]:
    """The newest work items of the API's stream that have no record (they wait), as `in_queue` records."""
    stream = _names.work_stream(api)
    try:
        state = (await js.stream_info(stream)).state
    except NotFoundError:
        return []
    first, last = int(state.first_seq or 0), int(state.last_seq or 0)
    queued: list[records_pb2.RequestRecord] = []
    # Step back through the stream in windows, reading each window's items forward (a work queue deletes what
    # was acknowledged, so the sequence numbers left are sparse).
    end, reads = last, 0
    while end >= first and first and len(queued) < limit and reads < QUEUED_READS:
        start = max(first, end - 2 * limit + 1)
        window: list[records_pb2.WorkItem] = []
        seq = start
        while seq <= end and reads < QUEUED_READS:
            try:
                msg = await js.get_msg(stream, seq=seq, subject=_names.work_subjects(api), next=True)
            except NotFoundError:
                break
            reads += 1
            if msg.seq is None or msg.seq > end:
                break
            window.append(records_pb2.WorkItem.FromString(msg.data or b""))
            seq = msg.seq + 1
        for item in reversed(window):
            # Delivered ones have a record (in progress, or finished and about to be acknowledged).
            if len(queued) < limit and await records.stored(requests, item.id) is None:
                queued.append(records.queued_record(item))
        end = start - 1
    return queued


async def _scan_records(
    js: JetStreamContext,
    api: str,
    status: int | None,
    limit: int,
    max_scanned: int,
    found: dict[str, records_pb2.RequestRecord],
) -> tuple[int, bool]:
    """Read the bucket's records newest first until `limit` of the API's (in `status`) are in `found`."""
    stream = f"KV_{_names.REQUESTS_BUCKET}"
    state = (await js.stream_info(stream)).state
    first, end = int(state.first_seq or 0), int(state.last_seq or 0)
    scanned, matched = 0, 0
    while first and end >= first and matched < limit and scanned < max_scanned:
        start = max(first, end - CHUNK + 1, end - (max_scanned - scanned) + 1)
        for record in await _read_records(js, stream, start, end):
            scanned += 1
            if record.api != api or (status is not None and record.status != status):
                continue
            if record.id not in found:
                matched += 1
            found[record.id] = record
        end = start - 1
    return scanned, scanned >= max_scanned and end >= first


async def _read_records(js: JetStreamContext, stream: str, start: int, end: int) -> list[records_pb2.RequestRecord]:
    """The records stored at sequences start..end (deleted keys and unreadable values left out)."""
    sub = await js.subscribe(
        f"{_names.REQUESTS_SUBJECT_PREFIX}>",
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        config=ConsumerConfig(opt_start_seq=start),
    )
    read: list[records_pb2.RequestRecord] = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=READ_TIMEOUT_SECONDS)
            except TimeoutError:
                break
            sequence = msg.metadata.sequence.stream
            if sequence > end:
                break
            if msg.data:
                with contextlib.suppress(Exception):
                    read.append(records_pb2.RequestRecord.FromString(msg.data))
            if sequence >= end or msg.metadata.num_pending == 0:
                break
    finally:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await sub.unsubscribe()
    return read
