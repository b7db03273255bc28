"""Everything kept about one request, for the console (Scheduler/GetRequestDetail).

A request's state is spread over what the mesh keeps anyway: its record (or, while it waits, its work item), its
body (inline in the work item, or in the payloads store, while it waits or runs, and in its dead letter after),
its result (in the record, or in the results store), its handler's log lines (the logs stream, labelled with its
id) and its webhook's delivery (in the record). This gathers them; nothing is stored for the console alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.parse
from datetime import UTC, datetime, timedelta

from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from cortado import _names, records
from cortado.result import JSON_TYPE
from cortado.v1 import control_pb2, records_pb2
from services.scheduler.requestlist import summary

PREVIEW_BYTES = 64 * 1024
"""Most bytes of a body or result shown as text."""

MAX_FETCHED_BODY_BYTES = 4 * 1024 * 1024
"""A body stored in the payloads store is fetched for its preview only up to this size."""

MAX_LOG_LINES = 500
MAX_LOG_SCAN = 20_000
"""Most log lines read (of the request's API, from its submission on) to find the request's own."""

LOG_READ_TIMEOUT_SECONDS = 1.0

TRACE_SERVICE = "cortado-executor"
"""The service whose spans carry `cortado.request_id` (a Jaeger search needs one)."""


def is_text(content_type: str) -> bool:
    """Whether bytes of this media type read as text: text/*, JSON, XML, form data, and their `+json`/`+xml` kin."""
    kind = content_type.split(";", 1)[0].strip().lower()
    return (
        kind.startswith("text/")
        or kind in {JSON_TYPE, "application/xml", "application/x-www-form-urlencoded", "application/x-ndjson"}
        or kind.endswith(("+json", "+xml"))
    )


def preview(content_type: str, data: bytes | None, size: int, retained: bool = True) -> control_pb2.Preview:
    """A Preview of bytes of this type and size; `data` (the start of them at least) shown when it is text."""
    shown = control_pb2.Preview(retained=retained, content_type=content_type, size=size)
    if retained and data is not None and is_text(content_type or "text/plain"):
        shown.text = data[:PREVIEW_BYTES].decode("utf-8", errors="replace")
        shown.truncated = size > PREVIEW_BYTES
    return shown


def trace_url(base: str, request_id: str, trace_id: str) -> str:
    """Where Jaeger (at base) shows the request's trace: the trace itself when a log line named it, else a search
    for the spans labelled with the request's id. Empty without a base."""
    if not base:
        return ""
    base = base.rstrip("/")
    if trace_id:
        return f"{base}/trace/{trace_id}"
    tags = json.dumps({"cortado.request_id": request_id}, separators=(",", ":"))
    return f"{base}/search?" + urllib.parse.urlencode({"service": TRACE_SERVICE, "tags": tags})


class RequestDetails:
    """Reads what the mesh keeps about requests."""

    def __init__(self, js: JetStreamContext, requests: KeyValue, payloads: ObjectStore, traces_url: str = "") -> None:
        self._js = js
        self.requests = requests
        """The requests bucket."""
        self._payloads = payloads
        self._traces_url = traces_url

    async def get(self, api: str, request_id: str) -> control_pb2.GetRequestDetailResponse | None:
        """The request's detail; None when the API has no such request (unknown, or its retention ran out)."""
        record = await records.current(self._js, self.requests, api, request_id)
        if record is None or record.api != api:
            return None
        detail = control_pb2.GetRequestDetailResponse(
            summary=summary(record),
            record_json=records.render_json(records.view(record), api).decode(),
        )
        # Every part is present (empty when it does not apply), so its JSON always has the same shape.
        for part in (detail.error, detail.webhook, detail.payload, detail.result):
            part.SetInParent()
        if record.status == records_pb2.REQUEST_STATUS_FAILED:
            detail.error.CopyFrom(record.error)
        if record.HasField("webhook"):
            detail.webhook.CopyFrom(record.webhook)
        item, detail.dead_letter = await self._work_item(api, request_id)
        detail.payload.CopyFrom(await self._payload(item))
        if record.status == records_pb2.REQUEST_STATUS_COMPLETED:
            detail.result.CopyFrom(_result(record))
        lines, trace_id = await self._log_lines(record)
        detail.log_lines.extend(lines)
        detail.trace_url = trace_url(self._traces_url, request_id, trace_id)
        return detail

    async def _work_item(self, api: str, request_id: str) -> tuple[records_pb2.WorkItem | None, bool]:
        """The request's work item while it waits or runs, else its dead letter's; whether it is a dead letter."""
        found = await records.queued_at(self._js, api, request_id)
        if found is not None:
            return found[0], False
        try:
            msg = await self._js.get_msg(_names.DEAD_STREAM, subject=_names.dead_subject(api, request_id))
        except NotFoundError:
            return None, False
        return records_pb2.WorkItem.FromString(msg.data or b""), True

    async def _payload(self, item: records_pb2.WorkItem | None) -> control_pb2.Preview:
        if item is None:
            return control_pb2.Preview(retained=False)
        if not item.payload_object:
            return preview(item.content_type, item.payload, len(item.payload))
        try:
            info = await self._payloads.get_info(item.payload_object)
        except NotFoundError:
            return control_pb2.Preview(retained=False, content_type=item.content_type)
        size = int(info.size or 0)
        data = None
        if size <= MAX_FETCHED_BODY_BYTES and is_text(item.content_type):
            with contextlib.suppress(NotFoundError):
                data = (await self._payloads.get(item.payload_object)).data
        return preview(item.content_type, data, size)

    async def _log_lines(self, record: records_pb2.RequestRecord) -> tuple[list[str], str]:
        """The request's log lines (from its API's, since its submission) and the trace id one of them _names."""
        if not record.HasField("started_at"):
            return [], ""
        since = record.submitted_at.ToDatetime(tzinfo=UTC) - timedelta(seconds=1)
        with contextlib.suppress(NotFoundError):
            last = (await self._js.stream_info(_names.LOGS_STREAM)).state.last_seq or 0
            return await _matching_lines(self._js, record.api, record.id, since, last)
        return [], ""


async def _matching_lines(
    js: JetStreamContext, api: str, request_id: str, since: datetime, last: int
) -> tuple[list[str], str]:
    """The API's log lines labelled with request_id, from `since` up to sequence `last`, and a trace id they name."""
    sub = await js.subscribe(
        _names.logs_subject(api),
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.BY_START_TIME,
        config=ConsumerConfig(opt_start_time=since),
    )
    lines: list[str] = []
    trace_id = ""
    needle = request_id.encode()
    try:
        for _ in range(MAX_LOG_SCAN):
            try:
                msg = await sub.next_msg(timeout=LOG_READ_TIMEOUT_SECONDS)
            except TimeoutError:
                break
            if needle in msg.data:
                with contextlib.suppress(ValueError, AttributeError):
                    line = json.loads(msg.data)
                    if line.get("labels", {}).get("request_id") == request_id:
                        lines.append(msg.data.decode("utf-8", errors="replace"))
                        trace_id = trace_id or str(line.get("trace_id") or "")
            if len(lines) >= MAX_LOG_LINES or msg.metadata.sequence.stream >= last or msg.metadata.num_pending == 0:
                break
    finally:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await sub.unsubscribe()
    return lines, trace_id


def _result(record: records_pb2.RequestRecord) -> control_pb2.Preview:
    """A completed request's result: inline JSON, inline bytes, or (stored) its type and size alone."""
    if not record.result_content_type:
        return preview(JSON_TYPE, record.result_json, len(record.result_json))
    if record.result_object:
        return control_pb2.Preview(retained=True, content_type=record.result_content_type, size=record.result_size)
    return preview(record.result_content_type, record.result_data, len(record.result_data))
