"""What clients see of a request record: its view (gRPC, webhooks) and the JSON body of `GET /<api>/<id>`.

The results service answers with it, and so do ingest (a submit that waits) and the console's detail page:
the one body every reader of a request gets.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from cortado.records.states import STATUS_NAMES, is_final
from cortado.v1 import records_pb2


def rfc3339(ts: Timestamp) -> str:
    """A Timestamp as RFC 3339 in UTC with microseconds, e.g. `2026-11-27T08:19:16.123456Z`."""
    moment = datetime.fromtimestamp(ts.seconds, tz=UTC).replace(microsecond=ts.nanos // 1000)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def view(record: records_pb2.RequestRecord) -> records_pb2.RequestView:
    """What a client may see of a stored record (over gRPC, its webhook's delivery too)."""
    out = records_pb2.RequestView(id=record.id, status=record.status)
    if record.status == records_pb2.REQUEST_STATUS_COMPLETED:
        out.result_json = record.result_json
        out.result_content_type = record.result_content_type
        out.result_data = record.result_data
        out.result_size = record.result_size or len(record.result_json)
        out.result_sha256 = record.result_sha256
    if is_final(record.status):
        out.finished_at.CopyFrom(record.finished_at)
    if record.status == records_pb2.REQUEST_STATUS_FAILED:
        out.error.CopyFrom(record.error)
    if record.HasField("webhook"):
        out.webhook.CopyFrom(record.webhook)
    return out


def not_found_view(request_id: str) -> records_pb2.RequestView:
    """The view of an unknown or expired request."""
    return records_pb2.RequestView(id=request_id, status=records_pb2.REQUEST_STATUS_NOT_FOUND)


def not_found_message(api: str, request_id: str) -> str:
    """Human-readable reason for a not_found answer."""
    return f"request {request_id!r} of API {api!r} was not found: the id is unknown or its result has expired"


def result_path(api: str, request_id: str) -> str:
    """Where a request's result is read over HTTP: `/<api>/<id>/result` (Results/ReadResult)."""
    return f"/{api}/{request_id}/result"


def result_reference(v: records_pb2.RequestView, api: str) -> dict[str, object]:
    """How a completed request's result that is not inline JSON is named: `result_url`, `result_content_type`,
    `result_bytes` and, when stored, `result_sha256`."""
    named: dict[str, object] = {
        "result_url": result_path(api, v.id),
        "result_content_type": v.result_content_type,
        "result_bytes": v.result_size,
    }
    if v.result_sha256:
        named["result_sha256"] = v.result_sha256
    return named


def render_json(v: records_pb2.RequestView, api: str) -> bytes:
    """The HTTP body of `GET /<api>/<id>`: `{"id", "status", "result"?, "timestamp"?, "error"?}`.

    The result's JSON text is spliced in byte for byte, so key order and
    integers of any size stay exactly as the handler's dict serialised. A result
    that is binary, or JSON too large to hold inline, is named instead:
    `result_url` (read it there), `result_content_type`, `result_bytes` and,
    when stored, `result_sha256`.
    """
    head = {"id": v.id, "status": STATUS_NAMES.get(v.status, "unknown")}
    body = json.dumps(head, ensure_ascii=False, separators=(",", ":")).encode()[:-1]
    parts = [body]
    if v.status == records_pb2.REQUEST_STATUS_COMPLETED and v.result_content_type:
        named = result_reference(v, api)
        parts.append(b"," + json.dumps(named, ensure_ascii=False, separators=(",", ":")).encode()[1:-1])
    elif v.status == records_pb2.REQUEST_STATUS_COMPLETED:
        parts.append(b',"result":' + (v.result_json or b"null"))
    if v.HasField("finished_at"):
        parts.append(b',"timestamp":' + json.dumps(rfc3339(v.finished_at)).encode())
    if v.status == records_pb2.REQUEST_STATUS_FAILED:
        error = {"type": v.error.type, "message": v.error.message}
        parts.append(b',"error":' + json.dumps(error, ensure_ascii=False, separators=(",", ":")).encode())
    if v.status == records_pb2.REQUEST_STATUS_NOT_FOUND:
        parts.append(b',"message":' + json.dumps(not_found_message(api, v.id), ensure_ascii=False).encode())
    parts.append(b"}")
    return b"".join(parts)
