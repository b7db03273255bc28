"""Where a request stands: its record in the requests bucket, or, before a handler took it, the queue itself.

Ingest writes no record when it queues a request: the work item's subject names the request
(`cortado.work.<api>.<priority>.<id>`), so a read finds a waiting request in its API's stream. The
executor writes the first record (`in_progress`) when it hands the request to a handler, and
acknowledges the work item (which removes it from the stream) only after the final record is
written: a request is always in one of the two places.
"""

from __future__ import annotations

import re

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from cortado import _names
from cortado.v1 import records_pb2

_SUBJECT_TOKEN = re.compile(r"[A-Za-z0-9_-]+")


async def queued(js: JetStreamContext, api: str, request_id: str) -> records_pb2.WorkItem | None:
    """The request's work item while it waits in its API's queue (delivered or not); None when it is not there."""
    found = await queued_at(js, api, request_id)
    return found[0] if found is not None else None


async def queued_at(js: JetStreamContext, api: str, request_id: str) -> tuple[records_pb2.WorkItem, int] | None:
    """The request's work item and its sequence in the API's stream while it is queued; None when it is not there.

    One read whatever the request's priority: the subject's priority token is a wildcard.
    """
    if not _SUBJECT_TOKEN.fullmatch(request_id):
        return None
    try:
        msg = await js.get_msg(_names.work_stream(api), subject=_names.work_subject_any_priority(api, request_id))
    except NotFoundError:
        return None
    return records_pb2.WorkItem.FromString(msg.data or b""), int(msg.seq or 0)


def queued_record(item: records_pb2.WorkItem) -> records_pb2.RequestRecord:
    """The record a queued request reads as: `in_queue` since it was submitted."""
    return records_pb2.RequestRecord(
        id=item.id,
        api=item.api,
        status=records_pb2.REQUEST_STATUS_IN_QUEUE,
        submitted_at=item.submitted_at,
        priority=item.priority,
    )


async def read_entry(kv: KeyValue, request_id: str) -> tuple[records_pb2.RequestRecord | None, int]:
    """The request's record in the bucket and its revision; (None, 0) when absent."""
    try:
        entry = await kv.get(request_id)
    except KeyNotFoundError:
        return None, 0
    if not entry.value:
        return None, entry.revision or 0
    return records_pb2.RequestRecord.FromString(entry.value), entry.revision or 0


async def stored(kv: KeyValue, request_id: str) -> records_pb2.RequestRecord | None:
    """The request's record in the bucket; None when there is none."""
    return (await read_entry(kv, request_id))[0]


async def current(js: JetStreamContext, kv: KeyValue, api: str, request_id: str) -> records_pb2.RequestRecord | None:
    """The request's record, or its `in_queue` state from the queue; None when the API has no such request.

    The queue is read after the bucket; a request that finished between the two reads (its work item
    acknowledged) is found by reading the bucket once more.
    """
    record = await stored(kv, request_id)
    if record is not None:
        return record
    item = await queued(js, api, request_id)
    if item is not None:
        return queued_record(item)
    return await stored(kv, request_id)
